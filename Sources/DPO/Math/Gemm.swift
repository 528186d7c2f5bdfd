import COpenBLAS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Work done by `sgemm`, for benchmarks (`dpo bench`). Opt-in: while `isEnabled` is false (the
/// default) sgemm neither reads the clock nor touches any shared counter, so trainers running in
/// parallel threads share no state through it. When enabled, the totals are atomic (correct from
/// any thread); sgemm calls made inside `parallelTasks` count into a per-worker `GemmTally` that
/// the caller merges afterwards.
public enum GemmCounter {
    private static let enabled = Atomic<Bool>(false)
    private static let flopCount = Atomic<UInt64>(0)
    private static let nanoseconds = Atomic<UInt64>(0)

    /// Whether sgemm counts its work. Set it before the computation to measure.
    public static var isEnabled: Bool {
        get { enabled.load(ordering: .relaxed) }
        set { enabled.store(newValue, ordering: .relaxed) }
    }

    /// Floating-point operations (2 m n k per call) since the last reset.
    public static var flops: Double { Double(flopCount.load(ordering: .relaxed)) }
    /// Wall time spent inside sgemm calls since the last reset (the rest of a step is everything else).
    public static var seconds: Double { Double(nanoseconds.load(ordering: .relaxed)) * 1e-9 }

    /// Sets both totals to zero.
    public static func reset() {
        flopCount.store(0, ordering: .relaxed)
        nanoseconds.store(0, ordering: .relaxed)
    }

    static func add(flops: Double, seconds: Double) {
        flopCount.wrappingAdd(UInt64(clamping: Int64(min(flops, 9e18))), ordering: .relaxed)
        nanoseconds.wrappingAdd(UInt64(clamping: Int64(min(seconds * 1e9, 9e18))), ordering: .relaxed)
    }

    @inline(__always) static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Adds the tallies of a parallel region: all flops, and the workers' sgemm seconds divided by
    /// their number (the wall time the region would spend in sgemm if the workers were busy alike).
    static func merge(_ tallies: [GemmTally]) {
        guard isEnabled, !tallies.isEmpty else { return }
        for t in tallies { add(flops: t.flops, seconds: t.seconds / Double(tallies.count)) }
    }
}

/// One worker's sgemm flops and seconds inside a parallel region (see GemmCounter).
struct GemmTally {
    var flops: Double = 0
    var seconds: Double = 0
}

/// Runs one row-major sgemm C[m, n] = A[m, k] B[k, n] on caller buffers (benchmarks measure the
/// OpenBLAS rate with it).
public func benchmarkSgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                           c: UnsafeMutablePointer<Float>) {
    sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: c, ldc: n)
}

/// Row-major single-precision matrix product through OpenBLAS:
///   C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C
/// where op(X) is X or its transpose. `lda`, `ldb`, `ldc` are row strides of the stored matrices
/// (so a column block of a wider matrix can be passed with its full row width).
/// Safe to call from several threads at once (OpenBLAS's pthread build serialises what it must);
/// it changes no process-wide setting. When GemmCounter is enabled, work is counted into `tally`
/// when given (concurrent callers), otherwise into GemmCounter.
@inline(__always)
func sgemm(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    tally: UnsafeMutablePointer<GemmTally>? = nil
) {
    if m == 0 || n == 0 { return }
    guard GemmCounter.isEnabled else {
        return blasSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }
    let t0 = GemmCounter.now()
    blasSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    let flops = 2 * Double(m) * Double(n) * Double(k), seconds = k == 0 ? 0 : GemmCounter.now() - t0
    if let tally {
        tally.pointee.flops += flops
        tally.pointee.seconds += seconds
    } else {
        GemmCounter.add(flops: flops, seconds: seconds)
    }
}

/// OpenBLAS (0.3.x, pthread build) computes a product with m n k <= 65536 * 4 (its
/// SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD) on the calling thread; a larger one goes to its
/// shared thread pool, and concurrent callers then wait for each other there.
let openBLASCallingThreadLimit = 262_144

/// `sgemm` for code that already runs on parallel workers (attention's tasks): a product too big
/// for OpenBLAS's calling-thread limit is computed in blocks under it, so the workers' products run
/// side by side instead of queueing for OpenBLAS's pool, and nothing process-wide (OpenBLAS's
/// thread count) is switched for it. Blocks are 64 x 64 of C (wider when k is small) and a slice
/// of k each, accumulated in a fixed order: the result is deterministic, but its rounding differs
/// from one product's where k is split.
func sgemmOnCallingThread(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    tally: UnsafeMutablePointer<GemmTally>
) {
    let limit = openBLASCallingThreadLimit
    if k == 0 || Double(m) * Double(n) * Double(k) <= Double(limit) {
        return sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                     beta: beta, c: c, ldc: ldc, tally: tally)
    }
    let mStep = min(m, 64)
    let nStep = min(n, max(64, limit / (mStep * k)))
    let kStep = min(k, max(1, limit / (mStep * nStep)))
    for i0 in stride(from: 0, to: m, by: mStep) {
        for j0 in stride(from: 0, to: n, by: nStep) {
            for p0 in stride(from: 0, to: k, by: kStep) {
                // Row i0 and column p0 of op(A), row p0 and column j0 of op(B), in row-major storage.
                sgemm(transA: transA, transB: transB, m: min(mStep, m - i0), n: min(nStep, n - j0),
                      k: min(kStep, k - p0), alpha: alpha,
                      a: a + (transA ? p0 * lda + i0 : i0 * lda + p0), lda: lda,
                      b: b + (transB ? j0 * ldb + p0 : p0 * ldb + j0), ldb: ldb,
                      beta: p0 == 0 ? beta : 1, c: c + i0 * ldc + j0, ldc: ldc, tally: tally)
            }
        }
    }
}

@inline(__always)
private func blasSgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                       _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    if k == 0 {
        // C = beta * C (BLAS would do the same, but some builds mishandle k = 0).
        for i in 0..<m {
            let row = c + i * ldc
            for j in 0..<n { row[j] = beta == 0 ? 0 : beta * row[j] }
        }
        return
    }
    cblas_sgemm(
        CblasRowMajor,
        transA ? CblasTrans : CblasNoTrans,
        transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k),
        alpha, a, Int32(lda), b, Int32(ldb),
        beta, c, Int32(ldc))
}

/// `sgemm`, or with `bf16` the bf16 product `bf16gemm` (BF16Gemm.swift): the model's products go
/// through here and `gemmOnCallingThread`, so one flag (LlamaModel.bf16) switches them all.
@inline(__always)
func gemm(
    bf16: Bool,
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if bf16 {
        bf16gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                 beta: beta, c: c, ldc: ldc)
    } else {
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
              beta: beta, c: c, ldc: ldc)
    }
}

/// `sgemmOnCallingThread`, or with `bf16` `bf16gemmOnCallingThread`.
@inline(__always)
func gemmOnCallingThread(
    bf16: Bool,
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    tally: UnsafeMutablePointer<GemmTally>
) {
    if bf16 {
        bf16gemmOnCallingThread(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, tally: tally)
    } else {
        sgemmOnCallingThread(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                             b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, tally: tally)
    }
}

/// Linear layer forward: Y[rows, outF] = X[rows, inF] * W^T (+ bias), W stored [outF, inF] as in
/// PyTorch's nn.Linear. `bf16`: the product with bf16 inputs (see `gemm`).
@inline(__always)
func linearForward(
    _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    weight w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    rows: Int, inFeatures: Int, outFeatures: Int, bf16: Bool = false
) {
    gemm(bf16: bf16, transB: true, m: rows, n: outFeatures, k: inFeatures,
          a: x, lda: inFeatures, b: w, ldb: inFeatures, beta: 0, c: y, ldc: outFeatures)
    if let bias { addBias(y, bias, rows: rows, width: outFeatures) }
}

/// Linear layer backward. Given dY[rows, outF]:
///   dX (+)= dY * W           (accumulate when `accumulateInput`)
///   dW += dY^T * X
///   db += column sums of dY
/// `bf16`: both products with bf16 inputs (see `gemm`).
@inline(__always)
func linearBackward(
    dx: UnsafeMutablePointer<Float>?, accumulateInput: Bool,
    dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
    rows: Int, inFeatures: Int, outFeatures: Int, bf16: Bool = false
) {
    if let dx {
        gemm(bf16: bf16, m: rows, n: inFeatures, k: outFeatures,
              a: dy, lda: outFeatures, b: w, ldb: inFeatures,
              beta: accumulateInput ? 1 : 0, c: dx, ldc: inFeatures)
    }
    gemm(bf16: bf16, transA: true, m: outFeatures, n: inFeatures, k: rows,
          a: dy, lda: outFeatures, b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
    if let dBias {
        for t in 0..<rows {
            let row = dy + t * outFeatures
            for j in 0..<outFeatures { dBias[j] += row[j] }
        }
    }
}
