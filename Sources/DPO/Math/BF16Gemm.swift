import CBF16
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// bf16 matrix products with fp32 accumulation, the math of PyTorch's CPU autocast to bfloat16:
/// every element of op(A) and op(B) is rounded to bfloat16 (`bf16Round`), the products of those
/// values are summed in fp32. Inputs and outputs are fp32 in memory, with the conventions of
/// `sgemm` (Gemm.swift).
///
/// Two implementations compute it:
/// - native: the AVX512-BF16 `vdpbf16ps` kernel of the CBF16 target (Sources/CBF16), which rounds
///   while it packs its panels; used when `hasNativeKernel` (CPUID and the OS's XCR0 say the CPU
///   has AVX512F, AVX512BW and AVX512_BF16).
/// - fallback: copies of the inputs rounded with `bf16Round`, then OpenBLAS sgemm. The same math on
///   any CPU (results differ from the native kernel's only in fp32 summation order); valgrind,
///   whose emulated CPUID hides AVX-512, runs this one.
/// Setting the environment variable `DPO_BF16_FALLBACK=1` forces the fallback (tests).
public enum BF16Gemm {
    /// The environment variable that forces the fallback when set to 1.
    public static let fallbackVariable = "DPO_BF16_FALLBACK"

    /// Whether this CPU and OS run the AVX512-BF16 kernel.
    public static var hasNativeKernel: Bool { bf16gemm_native_available() != 0 }

    /// Whether products use the native kernel now: it exists and DPO_BF16_FALLBACK is not 1.
    /// Read at every product (getenv), so a test can switch it between computations.
    public static var usesNativeKernel: Bool {
        guard hasNativeKernel else { return false }
        if let v = getenv(fallbackVariable), String(cString: v) == "1" { return false }
        return true
    }

    /// Estimated peak of the kernel's instruction in FLOP/s on `Threads.count` cores at once: each
    /// worker runs independent `vdpbf16ps` (64 FLOPs each) for `iterations` rounds of 24; the sum
    /// of the workers' rates. 0 without the native kernel.
    public static func measurePeak(iterations: Int = 4_000_000) -> Double {
        guard hasNativeKernel else { return 0 }
        let workers = Threads.count
        let rates = UnsafeMutableBufferPointer<Double>.allocate(capacity: workers)
        defer { rates.deallocate() }
        parallelFor(workers) { range in
            for w in range { rates[w] = bf16gemm_native_peak_probe(iterations) }
        }
        return rates.reduce(0, +)
    }
}

/// Rounds a Float to the nearest bfloat16 (ties to even), returned as the Float of equal value:
/// the upper 16 bits of the result are the bf16. As PyTorch's `tensor.to(torch.bfloat16)` for
/// normal numbers, infinities and NaN (which stays NaN, made quiet); subnormal inputs (magnitude
/// below 2^-126) become zeros of their sign, as VCVTNE2PS2BF16 does them, so that the native
/// kernel and the fallback multiply identical values (PyTorch keeps bf16 subnormals).
@inline(__always)
func bf16Round(_ x: Float) -> Float {
    let bits = x.bitPattern
    if bits & 0x7F80_0000 == 0 { return Float(bitPattern: bits & 0x8000_0000) }
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return Float(bitPattern: (bits | 0x0040_0000) & 0xFFFF_0000) }
    // Adding 0x7FFF plus the lowest kept bit carries into the kept bits exactly when the dropped
    // half is above one half, or equal to it with an odd kept part; overflow gives infinity.
    return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
}

/// Row-major bf16 product (see BF16Gemm):
///   C[m, n] = alpha * bf16(op(A))[m, k] * bf16(op(B))[k, n] + beta * C
/// with the shapes, strides and transposes of `sgemm`; beta == 0 does not read C. Uses up to
/// `Threads.count` threads. Counted by GemmCounter like sgemm (into `tally` when given).
func bf16gemm(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    tally: UnsafeMutablePointer<GemmTally>? = nil
) {
    bf16gemmCounted(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, tally, parallel: true)
}

/// `bf16gemm` for code that already runs on parallel workers (attention's tasks): the product is
/// computed on the calling thread (the fallback through `sgemmOnCallingThread`).
func bf16gemmOnCallingThread(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    tally: UnsafeMutablePointer<GemmTally>
) {
    bf16gemmCounted(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, tally, parallel: false)
}

/// Runs one row-major product C[m, n] = op(A) op(B) on caller buffers (A holds m k floats, B k n,
/// C m n; op transposes when asked, with dense strides) with the library's threads: bf16 (this
/// file) or OpenBLAS sgemm. Benchmarks compare the two with it.
public func benchmarkProduct(bf16: Bool, transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                             a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
    let lda = transA ? m : k, ldb = transB ? k : n
    if bf16 {
        bf16gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n)
    } else {
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n)
    }
}

private func bf16gemmCounted(
    _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
    _ tally: UnsafeMutablePointer<GemmTally>?, parallel: Bool
) {
    if m == 0 || n == 0 { return }
    guard GemmCounter.isEnabled else {
        return bf16gemmCompute(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parallel: parallel)
    }
    let t0 = GemmCounter.now()
    bf16gemmCompute(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parallel: parallel)
    let flops = 2 * Double(m) * Double(n) * Double(k), seconds = k == 0 ? 0 : GemmCounter.now() - t0
    if let tally {
        tally.pointee.flops += flops
        tally.pointee.seconds += seconds
    } else {
        GemmCounter.add(flops: flops, seconds: seconds)
    }
}

/// Products smaller than this (m n k) run on one thread: below it, waking workers costs more
/// than the share of work they would take (about 10 us at 400 GFLOP/s).
private let bf16ParallelMinimum = 2_000_000.0

private func bf16gemmCompute(
    _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, parallel: Bool
) {
    guard BF16Gemm.usesNativeKernel else {
        return bf16gemmFallback(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parallel: parallel)
    }
    // Split C into one block per worker. Each worker packs its own panels, so the operand along
    // the dimension not split is packed (and read from memory) by every worker: split rows when
    // B (k x n) is the smaller operand, columns otherwise, unless that leaves too few tiles.
    let tileRows = Int(bf16gemm_tile_rows()), tileColumns = Int(bf16gemm_tile_columns())
    let rowTiles = (m + tileRows - 1) / tileRows, columnTiles = (n + tileColumns - 1) / tileColumns
    let splitRows = m >= n ? rowTiles >= min(Threads.count, columnTiles) : columnTiles < min(Threads.count, rowTiles)
    var workers = 1
    if parallel && Double(m) * Double(n) * Double(k) >= bf16ParallelMinimum {
        workers = min(Threads.count, splitRows ? rowTiles : columnTiles)
    }
    func block(_ w: Int) {
        let workspace = BF16Workspaces.take()
        defer { BF16Workspaces.give(workspace) }
        let tiles = splitRows ? rowTiles : columnTiles, size = splitRows ? tileRows : tileColumns
        let extent = splitRows ? m : n
        let lo = min(extent, tiles * w / workers * size), hi = min(extent, tiles * (w + 1) / workers * size)
        if lo >= hi { return }
        _ = bf16gemm_native_block(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                  splitRows ? lo : 0, splitRows ? hi - lo : m,
                                  splitRows ? 0 : lo, splitRows ? n : hi - lo, workspace)
    }
    if workers == 1 { return block(0) }
    parallelFor(workers) { range in for w in range { block(w) } }
}

/// Packing buffers of the native kernel (bf16gemm_workspace_bytes, 3.4 MiB each), kept for the
/// next product: allocating them per call cost fresh pages (page faults) on every product. At most
/// one per concurrently running block is ever allocated; up to `kept` stay allocated for reuse.
enum BF16Workspaces {
    private static let free = Mutex<[UInt]>([])
    private static let kept = 16
    private static let bytes = Int(bf16gemm_workspace_bytes())

    static func take() -> UnsafeMutableRawPointer {
        if let address = free.withLock({ $0.popLast() }), let p = UnsafeMutableRawPointer(bitPattern: address) {
            return p
        }
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    }

    static func give(_ p: UnsafeMutableRawPointer) {
        let keep = free.withLock { list -> Bool in
            guard list.count < kept else { return false }
            list.append(UInt(bitPattern: p))
            return true
        }
        if !keep { p.deallocate() }
    }
}

/// The portable path: op(A) and op(B) rounded to bf16 into temporary copies, then sgemm.
private func bf16gemmFallback(
    _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, parallel: Bool
) {
    // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k).
    let aRows = transA ? k : m, aColumns = transA ? m : k
    let bRows = transB ? n : k, bColumns = transB ? k : n
    let ra = UnsafeMutablePointer<Float>.allocate(capacity: max(1, aRows * aColumns))
    let rb = UnsafeMutablePointer<Float>.allocate(capacity: max(1, bRows * bColumns))
    defer { ra.deallocate(); rb.deallocate() }
    bf16RoundCopy(ra, from: a, rows: aRows, columns: aColumns, stride: lda, parallel: parallel)
    bf16RoundCopy(rb, from: b, rows: bRows, columns: bColumns, stride: ldb, parallel: parallel)
    // Counted by the caller: the inner sgemm counts into a tally nobody reads.
    var ignored = GemmTally()
    if parallel {
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ra, lda: max(1, aColumns),
              b: rb, ldb: max(1, bColumns), beta: beta, c: c, ldc: ldc, tally: &ignored)
    } else {
        sgemmOnCallingThread(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ra,
                             lda: max(1, aColumns), b: rb, ldb: max(1, bColumns), beta: beta, c: c, ldc: ldc,
                             tally: &ignored)
    }
}

/// dst[rows, columns] (contiguous) = bf16Round of src[rows, columns] (row stride `stride`).
private func bf16RoundCopy(_ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>,
                           rows: Int, columns: Int, stride: Int, parallel: Bool) {
    if rows == 0 || columns == 0 { return }
    func run(_ range: Range<Int>) {
        for r in range {
            let s = src + r * stride, d = dst + r * columns
            for j in 0..<columns { d[j] = bf16Round(s[j]) }
        }
    }
    if parallel {
        parallelFor(rows, grain: max(1, 65536 / columns), run)
    } else {
        run(0..<rows)
    }
}
