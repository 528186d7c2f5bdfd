import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Floating-point operations executed by `sgemm` (2 m n k per call) since the last reset, for
/// benchmarks. Updated by the calling thread only: sgemm calls made concurrently (in
/// `parallelTasks`) count into a per-worker `GemmTally` that the caller merges afterwards.
public enum GemmCounter {
    nonisolated(unsafe) public static var flops: Double = 0
    /// Wall time spent inside sgemm calls (the rest of a step is everything else).
    nonisolated(unsafe) public static var seconds: Double = 0

    @inline(__always) static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Adds the tallies of a parallel region: all flops, and the workers' sgemm seconds divided by
    /// their number (the wall time the region would spend in sgemm if the workers were busy alike).
    static func merge(_ tallies: [GemmTally]) {
        for t in tallies { flops += t.flops; seconds += t.seconds / Double(tallies.count) }
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
/// Work is counted into `tally` when given (concurrent callers), otherwise into GemmCounter.
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
    _ = openBLASIdleSpinShortened
    let flops = 2 * Double(m) * Double(n) * Double(k)
    if let tally { tally.pointee.flops += flops } else { GemmCounter.flops += flops }
    if k == 0 {
        // C = beta * C (BLAS would do the same, but some builds mishandle k = 0).
        for i in 0..<m {
            let row = c + i * ldc
            for j in 0..<n { row[j] = beta == 0 ? 0 : beta * row[j] }
        }
        return
    }
    let t0 = GemmCounter.now()
    defer {
        let dt = GemmCounter.now() - t0
        if let tally { tally.pointee.seconds += dt } else { GemmCounter.seconds += dt }
    }
    cblas_sgemm(
        CblasRowMajor,
        transA ? CblasTrans : CblasNoTrans,
        transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k),
        alpha, a, Int32(lda), b, Int32(ldb),
        beta, c, Int32(ldc))
}

/// Linear layer forward: Y[rows, outF] = X[rows, inF] * W^T (+ bias), W stored [outF, inF] as in
/// PyTorch's nn.Linear.
@inline(__always)
func linearForward(
    _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    weight w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    rows: Int, inFeatures: Int, outFeatures: Int
) {
    sgemm(transB: true, m: rows, n: outFeatures, k: inFeatures,
          a: x, lda: inFeatures, b: w, ldb: inFeatures, beta: 0, c: y, ldc: outFeatures)
    if let bias { addBias(y, bias, rows: rows, width: outFeatures) }
}

/// Linear layer backward. Given dY[rows, outF]:
///   dX (+)= dY * W           (accumulate when `accumulateInput`)
///   dW += dY^T * X
///   db += column sums of dY
@inline(__always)
func linearBackward(
    dx: UnsafeMutablePointer<Float>?, accumulateInput: Bool,
    dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
    rows: Int, inFeatures: Int, outFeatures: Int
) {
    if let dx {
        sgemm(m: rows, n: inFeatures, k: outFeatures,
              a: dy, lda: outFeatures, b: w, ldb: inFeatures,
              beta: accumulateInput ? 1 : 0, c: dx, ldc: inFeatures)
    }
    sgemm(transA: true, m: outFeatures, n: inFeatures, k: rows,
          a: dy, lda: outFeatures, b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
    if let dBias {
        for t in 0..<rows {
            let row = dy + t * outFeatures
            for j in 0..<outFeatures { dBias[j] += row[j] }
        }
    }
}
