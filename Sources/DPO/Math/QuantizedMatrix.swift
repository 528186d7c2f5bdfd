import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A frozen weight matrix W [outFeatures, inFeatures] (PyTorch's nn.Linear layout) kept in its
/// GGUF block form: each row is `inFeatures / type.blockSize` ggml blocks (GGUFDequantize.swift),
/// rows one after the other, as ggml stores a 2-D tensor with ne = [inFeatures, outFeatures].
/// The two products a frozen linear layer needs dequantize W tile by tile into a small fp32
/// scratch buffer and multiply each tile with OpenBLAS; the whole fp32 matrix never exists.
///
/// Each product's tiles cut W along the dimension the product does *not* sum over, so every
/// output element is one sgemm dot product over the whole of its sum, of values equal to the
/// fully dequantized W's (the dequantizers are exact):
///   forward         Y[T, out] (+)= X[T, in] W^T    tiles of rows of W (output features)
///   input gradient  dX[T, in] (+)= dY[T, out] W    tiles of columns of W (input features)
/// The results are bit-identical to the same tiled products on the dequantized fp32 W
/// (`QuantizedMatrix.forward(_:tokens:weight:...)` and `inputGradient(_:tokens:weight:...)`,
/// which an fp32 frozen base can use to compute the same bits), and equal one sgemm on the
/// dequantized W (`linearForward`) up to the order in which OpenBLAS sums each dot product,
/// which depends on how it blocks and threads the product (its kernels keep several partial sums
/// per element for some block widths): each element within 1e-6 * (|C| + sum_k |A_ik| |B_kj|)
/// of it (QuantizedMatrixTests), most bit-identical.
///
/// Immutable after creation, so any number of threads may multiply with it at once.
public final class QuantizedMatrix: @unchecked Sendable {
    /// The ggml type of the blocks (one of `GGMLType.isReadableAsFloat`).
    public let type: GGMLType
    /// Rows of W: the output features of the linear layer.
    public let outFeatures: Int
    /// Columns of W: the input features (a multiple of `type.blockSize`).
    public let inFeatures: Int
    /// Bytes of one row (`inFeatures / blockSize` blocks).
    public let rowBytes: Int
    /// The quantized bytes, `outFeatures * rowBytes` of them, 64-byte aligned.
    private let storage: UnsafeMutableRawPointer

    /// Bytes the matrix holds (its quantized size; the products' scratch comes from a small
    /// shared pool, see `QuantizedScratch`).
    public var byteCount: Int { outFeatures * rowBytes }
    /// Bytes the same matrix takes as fp32.
    public var fp32ByteCount: Int { outFeatures * inFeatures * 4 }

    /// Wraps `bytes`, the ggml blocks of a [outFeatures, inFeatures] matrix of `type` in row-major
    /// order (the data of a GGUF tensor with dimensions [inFeatures, outFeatures]). Throws
    /// `DPOError.invalidArgument` naming `what` when the type cannot be dequantized, the columns
    /// are not whole blocks, or the byte count does not match.
    public convenience init(type: GGMLType, outFeatures: Int, inFeatures: Int, bytes: UnsafeRawBufferPointer,
                            what: String = "quantized matrix") throws {
        try self.init(type: type, outFeatures: outFeatures, inFeatures: inFeatures, bytes: bytes, what: what,
                      sourceRow: { $0 })
    }

    /// As the public initializer, with row r of the matrix taken from row `sourceRow(r)` of
    /// `bytes` (a permutation of 0..<outFeatures, e.g. llama.cpp's q/k row order undone).
    init(type: GGMLType, outFeatures: Int, inFeatures: Int, bytes: UnsafeRawBufferPointer, what: String,
         sourceRow: (Int) -> Int) throws {
        guard type.isReadableAsFloat else {
            throw DPOError.invalidArgument("\(what): ggml type \(type.name) cannot be dequantized (supported: \(GGMLType.readableNames))")
        }
        guard outFeatures >= 0, inFeatures >= 0 else {
            throw DPOError.invalidArgument("\(what): negative shape [\(outFeatures), \(inFeatures)]")
        }
        let (blockSize, blockBytes) = (type.blockSize, type.bytesPerBlock)
        guard inFeatures % blockSize == 0 else {
            throw DPOError.invalidArgument("\(what): \(inFeatures) columns are not a multiple of the \(type.name) block size \(blockSize)")
        }
        let rowBytes = inFeatures / blockSize * blockBytes
        guard case let (total, false) = rowBytes.multipliedReportingOverflow(by: outFeatures),
              case let (count, false) = outFeatures.multipliedReportingOverflow(by: inFeatures),
              case (_, false) = count.multipliedReportingOverflow(by: 4) else {
            throw DPOError.invalidArgument("\(what): shape [\(outFeatures), \(inFeatures)] overflows")
        }
        guard bytes.count == total else {
            throw DPOError.invalidArgument("\(what): a [\(outFeatures), \(inFeatures)] \(type.name) matrix has \(total) bytes, got \(bytes.count)")
        }
        for r in 0..<outFeatures where !(0..<outFeatures).contains(sourceRow(r)) {
            throw DPOError.internal("\(what): row \(r) is taken from row \(sourceRow(r)), outside 0..<\(outFeatures)")
        }
        try MemoryLimit.check(Double(total), what)
        self.type = type
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.rowBytes = rowBytes
        storage = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(total, 1), alignment: 64)
        if total > 0, let base = bytes.baseAddress {
            for r in 0..<outFeatures {
                (storage + r * rowBytes).copyMemory(from: base + sourceRow(r) * rowBytes, byteCount: rowBytes)
            }
        }
    }

    deinit { storage.deallocate() }

    /// The quantized bytes, row-major (for saving or hashing; do not keep the pointer).
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage, count: byteCount))
    }

    // MARK: Dequantization

    /// Dequantizes rows `rows` of W into `destination` (row-major, `rows.count * inFeatures`
    /// floats), exactly as `GGUFFile.readFloats` (an embedding lookup takes one row this way).
    public func dequantize(rows: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard rows.lowerBound >= 0, rows.upperBound <= outFeatures else {
            throw DPOError.invalidArgument("rows \(rows) are outside the \(outFeatures) rows of the matrix")
        }
        guard destination.count == rows.count * inFeatures else {
            throw DPOError.invalidArgument("rows \(rows) of \(inFeatures) columns need \(rows.count * inFeatures) floats, the destination holds \(destination.count)")
        }
        guard let out = destination.baseAddress else { return }
        dequantizeTile(rows: rows, blocks: 0..<inFeatures / type.blockSize, into: out, parallel: true)
    }

    /// Dequantizes rows `rows` and block columns `blocks` of W into `dst`, row r at
    /// `dst + (r - rows.lowerBound) * blocks.count * blockSize`. Parallel over rows when `parallel`
    /// and the tile is large enough to pay for waking workers. The products dequantize their tiles
    /// on the calling thread: on the 2-core development machine the benchmark measured no gain
    /// from two threads (a 576 x 576 Q4_1 matrix took 0.06 ms either way, about 5 G floats/s, a
    /// few percent of the T = 512 product), and OpenBLAS's threads then have the cores to
    /// themselves between tiles.
    func dequantizeTile(rows: Range<Int>, blocks: Range<Int>, into dst: UnsafeMutablePointer<Float>, parallel: Bool) {
        let type = self.type, base = UnsafeRawPointer(storage), rowBytes = self.rowBytes
        let blockBytes = type.bytesPerBlock, width = blocks.count * type.blockSize
        let first = rows.lowerBound
        func run(_ part: Range<Int>) {
            for r in part {
                dequantizeBlocks(type, base + r * rowBytes + blocks.lowerBound * blockBytes, blocks: blocks.count,
                               into: dst + (r - first) * width)
            }
        }
        let grain = Swift.max(1, dequantizeParallelMinimum / Swift.max(width, 1))
        if parallel && rows.count >= 2 * grain {
            parallelFor(rows.count, grain: grain) { part in run(part.lowerBound + first..<part.upperBound + first) }
        } else {
            run(rows)
        }
    }

    // MARK: Products

    /// The forward product of a frozen linear layer, Y[T, outFeatures] = X[T, inFeatures] W^T, or
    /// Y += X W^T with `accumulate`: what `linearForward` computes with the fp32 W (a bias is the
    /// caller's). `bf16`: the product with bf16-rounded operands, as `gemm(bf16: true)` computes it
    /// (LlamaModel.bf16). X and Y are contiguous row-major. Bit-identical to
    /// `QuantizedMatrix.forward(_:tokens:weight:...)` on the dequantized W (see the type's comment).
    public func forward(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>,
                        accumulate: Bool = false, bf16: Bool = false) {
        if type == .F32 {
            return QuantizedMatrix.forward(x, tokens: tokens, weight: fp32Storage, outFeatures: outFeatures,
                                           inFeatures: inFeatures, into: y, accumulate: accumulate, bf16: bf16)
        }
        let inF = inFeatures
        let scratch = QuantizedScratch.take(floats: FrozenLinearTiles.forwardRows(outFeatures, inF) * inF)
        defer { QuantizedScratch.give(scratch) }
        let allBlocks = 0..<inF / type.blockSize
        FrozenLinearTiles.forward(x, tokens: tokens, outFeatures: outFeatures, inFeatures: inF, into: y,
                                  accumulate: accumulate, bf16: bf16) { rows in
            dequantizeTile(rows: rows, blocks: allBlocks, into: scratch.pointer, parallel: false)
            return UnsafePointer(scratch.pointer)
        }
    }

    /// The input gradient of a frozen linear layer, dX[T, inFeatures] = dY[T, outFeatures] W, or
    /// dX += dY W with `accumulate`: what `linearBackward` computes for dx with the fp32 W (no
    /// weight gradient: W is frozen). `bf16` as in `forward`. dY and dX are contiguous row-major.
    /// Bit-identical to `QuantizedMatrix.inputGradient(_:tokens:weight:...)` on the dequantized W.
    public func inputGradient(_ dy: UnsafePointer<Float>, tokens: Int, into dx: UnsafeMutablePointer<Float>,
                              accumulate: Bool = false, bf16: Bool = false) {
        if type == .F32 {
            return QuantizedMatrix.inputGradient(dy, tokens: tokens, weight: fp32Storage, outFeatures: outFeatures,
                                                 inFeatures: inFeatures, into: dx, accumulate: accumulate, bf16: bf16)
        }
        let (out, blockSize) = (outFeatures, type.blockSize)
        let scratch = QuantizedScratch.take(floats: out * FrozenLinearTiles.gradientColumns(out, inFeatures))
        defer { QuantizedScratch.give(scratch) }
        FrozenLinearTiles.inputGradient(dy, tokens: tokens, outFeatures: out, inFeatures: inFeatures, into: dx,
                                        accumulate: accumulate, bf16: bf16) { columns in
            // Tile columns start and end on block boundaries (FrozenLinearTiles.columnStep).
            let blocks = columns.lowerBound / blockSize..<columns.upperBound / blockSize
            dequantizeTile(rows: 0..<out, blocks: blocks, into: scratch.pointer, parallel: false)
            return (UnsafePointer(scratch.pointer), columns.count)
        }
    }

    /// The stored bytes of an F32 matrix as floats.
    private var fp32Storage: UnsafePointer<Float> {
        UnsafeRawPointer(storage).assumingMemoryBound(to: Float.self)
    }

    /// `forward` with an fp32 W [outFeatures, inFeatures] (row-major, contiguous), cut into the
    /// same tiles as a quantized W of that shape: on the dequantized values of a QuantizedMatrix
    /// the result is bit-identical to the QuantizedMatrix's (so a model whose frozen weights are
    /// fp32 and one that keeps them quantized compute the same bits), and within rounding
    /// (see the type's comment) of one sgemm (`linearForward`).
    public static func forward(_ x: UnsafePointer<Float>, tokens: Int, weight w: UnsafePointer<Float>,
                               outFeatures: Int, inFeatures: Int, into y: UnsafeMutablePointer<Float>,
                               accumulate: Bool = false, bf16: Bool = false) {
        FrozenLinearTiles.forward(x, tokens: tokens, outFeatures: outFeatures, inFeatures: inFeatures, into: y,
                                  accumulate: accumulate, bf16: bf16) { rows in w + rows.lowerBound * inFeatures }
    }

    /// `inputGradient` with an fp32 W, tiled as `forward(_:tokens:weight:...)` is.
    public static func inputGradient(_ dy: UnsafePointer<Float>, tokens: Int, weight w: UnsafePointer<Float>,
                                     outFeatures: Int, inFeatures: Int, into dx: UnsafeMutablePointer<Float>,
                                     accumulate: Bool = false, bf16: Bool = false) {
        FrozenLinearTiles.inputGradient(dy, tokens: tokens, outFeatures: outFeatures, inFeatures: inFeatures, into: dx,
                                        accumulate: accumulate, bf16: bf16) { columns in
            (w + columns.lowerBound, inFeatures)
        }
    }
}

/// The tiles of the frozen-linear products, one scheme for every weight type, so that products
/// with a quantized W and with its dequantized fp32 values make the same sgemm calls on the same
/// values (a tile's row stride does not change OpenBLAS's arithmetic: it packs B first).
enum FrozenLinearTiles {
    /// Forward tiles start at multiples of 64 rows, input-gradient tiles at multiples of 256
    /// columns: multiples of OpenBLAS's register blocking (16 x 4 or 8 x 8 floats for sgemm on
    /// x86-64), so that a tile's product is blocked like the same rows of the whole product where
    /// OpenBLAS does not thread it differently, and 256 is a whole number of blocks of every ggml
    /// type (block sizes 1, 32, 256).
    static let rowStep = 64, columnStep = 256

    /// Rows of W per forward tile: `QuantizedScratch.tileFloats / inFeatures` rounded down to a
    /// multiple of `rowStep` (at least one step, at most all rows).
    static func forwardRows(_ outFeatures: Int, _ inFeatures: Int) -> Int {
        Swift.min(outFeatures, Swift.max(1, QuantizedScratch.tileFloats / Swift.max(inFeatures, 1) / rowStep) * rowStep)
    }

    /// Columns of W per input-gradient tile, likewise with `columnStep`.
    static func gradientColumns(_ outFeatures: Int, _ inFeatures: Int) -> Int {
        Swift.min(inFeatures, Swift.max(1, QuantizedScratch.tileFloats / Swift.max(outFeatures, 1) / columnStep) * columnStep)
    }

    /// Y (+)= X W^T, tile by tile: `tile(rows)` returns rows `rows` of W (row stride inFeatures),
    /// valid until the next call.
    static func forward(_ x: UnsafePointer<Float>, tokens T: Int, outFeatures out: Int, inFeatures inF: Int,
                        into y: UnsafeMutablePointer<Float>, accumulate: Bool, bf16: Bool,
                        tile: (Range<Int>) -> UnsafePointer<Float>) {
        if T <= 0 || out <= 0 { return }
        if inF <= 0 { return zeroUnlessAccumulating(y, count: T * out, accumulate) }
        let step = forwardRows(out, inF), beta: Float = accumulate ? 1 : 0
        for r0 in stride(from: 0, to: out, by: step) {
            let rows = r0..<Swift.min(r0 + step, out)
            gemm(bf16: bf16, transB: true, m: T, n: rows.count, k: inF, a: x, lda: inF, b: tile(rows), ldb: inF,
                 beta: beta, c: y + r0, ldc: out)
        }
    }

    /// dX (+)= dY W, tile by tile: `tile(columns)` returns columns `columns` of all rows of W and
    /// their row stride, valid until the next call.
    static func inputGradient(_ dy: UnsafePointer<Float>, tokens T: Int, outFeatures out: Int, inFeatures inF: Int,
                              into dx: UnsafeMutablePointer<Float>, accumulate: Bool, bf16: Bool,
                              tile: (Range<Int>) -> (UnsafePointer<Float>, Int)) {
        if T <= 0 || inF <= 0 { return }
        if out <= 0 { return zeroUnlessAccumulating(dx, count: T * inF, accumulate) }
        let step = gradientColumns(out, inF), beta: Float = accumulate ? 1 : 0
        for c0 in stride(from: 0, to: inF, by: step) {
            let columns = c0..<Swift.min(c0 + step, inF)
            let (b, ldb) = tile(columns)
            gemm(bf16: bf16, m: T, n: columns.count, k: out, a: dy, lda: out, b: b, ldb: ldb,
                 beta: beta, c: dx + c0, ldc: inF)
        }
    }

    /// An empty sum (no columns of X, no rows of W): C = 0, or C unchanged when accumulating.
    private static func zeroUnlessAccumulating(_ c: UnsafeMutablePointer<Float>, count: Int, _ accumulate: Bool) {
        if !accumulate { c.update(repeating: 0, count: count) }
    }
}

/// Elements below which a tile is dequantized on the calling thread (waking a worker costs about
/// as much as dequantizing this many).
private let dequantizeParallelMinimum = 16_384

/// The fp32 tile buffers of `QuantizedMatrix`'s products, kept for the next product (a fresh
/// allocation per product would cost page faults every time). A buffer is taken for one product
/// and given back after it; at most `kept` stay allocated, so the memory the pool holds is bounded
/// by `kept` times the largest tile (`tileFloats` floats, or one tile step of `FrozenLinearTiles`,
/// 64 rows or 256 columns, when that is larger). A single-threaded SmolLM2 step needs two: 768 KiB
/// (the forward tiles) and 1.5 MiB (the input-gradient tile of gate/up_proj: 1536 rows x 256
/// columns).
enum QuantizedScratch {
    /// Floats per tile: 192 Ki = 768 KiB (in L2 beside OpenBLAS's packed panels), e.g. 320 rows
    /// of a 576-column matrix or 128 of a 1536-column one (`FrozenLinearTiles`). Tuned with the benchmark
    /// in QuantizedMatrixTests (DPO_QGEMM_BENCH=1, T = 512, SmolLM2's shapes: 64 Ki tiles cost
    /// 1.1-1.2x sgemm's time, 128 Ki to 256 Ki 1.06-1.12x); `setTileFloats` changes it (tests).
    nonisolated(unsafe) private(set) static var tileFloats = 192 * 1024
    private static let kept = 8
    private static let free = Mutex<[(address: UInt, floats: Int)]>([])

    struct Buffer {
        let pointer: UnsafeMutablePointer<Float>
        let floats: Int
    }

    /// Sets the tile size (at least 1 float) and empties the pool. Not thread-safe with running
    /// products: for tests and benchmarks, between computations.
    static func setTileFloats(_ floats: Int) {
        tileFloats = Swift.max(1, floats)
        let old = free.withLock { list -> [(address: UInt, floats: Int)] in
            defer { list.removeAll() }
            return list
        }
        for b in old { UnsafeMutablePointer<Float>(bitPattern: b.address)?.deallocate() }
    }

    static func take(floats: Int) -> Buffer {
        let found = free.withLock { list -> (address: UInt, floats: Int)? in
            guard let i = list.firstIndex(where: { $0.floats >= floats }) else { return nil }
            return list.remove(at: i)
        }
        if let found, let p = UnsafeMutablePointer<Float>(bitPattern: found.address) {
            return Buffer(pointer: p, floats: found.floats)
        }
        let n = Swift.max(floats, 1)
        return Buffer(pointer: UnsafeMutableRawPointer.allocate(byteCount: 4 * n, alignment: 64)
                        .bindMemory(to: Float.self, capacity: n), floats: n)
    }

    static func give(_ b: Buffer) {
        let keep = free.withLock { list -> Bool in
            guard list.count < kept else { return false }
            list.append((UInt(bitPattern: b.pointer), b.floats))
            return true
        }
        if !keep { b.pointer.deallocate() }
    }

    /// Bytes the pool holds now (for memory reports).
    static var heldBytes: Int { free.withLock { $0.reduce(0) { $0 + 4 * $1.floats } } }
}
