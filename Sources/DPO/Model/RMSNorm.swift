// RMSNorm as in transformers' LlamaRMSNorm (fp32):
//   rstd = 1 / sqrt(mean_j x_j^2 + eps),   y = w * (x * rstd)
// The forward saves rstd per row; the backward recomputes x_hat = x * rstd from the saved input.

/// Sum of squares of n floats with SIMD-blocked accumulation (16 lanes, then a lane reduction).
@inline(__always)
func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var j = 0
    while j + 16 <= n {
        let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD16<Float>.self)
        acc += v * v
        j += 16
    }
    var s = acc.sum()
    while j < n { s += x[j] * x[j]; j += 1 }
    return s
}

/// y[rows, dim] = rmsnorm(x) * weight; rstd[rows] saved for the backward.
/// `x` rows may be gathered: row r of the output reads input row `rowIndex?(r) ?? r`.
func rmsnormForward(
    _ y: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    rows: Int, dim: Int, eps: Float, gather: UnsafePointer<Int32>? = nil
) {
    parallelFor(rows, grain: 16) { range in
        for r in range {
            let src = x + (gather.map { Int($0[r]) } ?? r) * dim
            let dst = y + r * dim
            let s = 1 / (sumOfSquares(src, dim) / Float(dim) + eps).squareRoot()
            rstd[r] = s
            for j in 0..<dim { dst[j] = weight[j] * (src[j] * s) }
        }
    }
}

/// Backward of `rmsnormForward`. Given dy[rows, dim]:
///   x_hat = x * rstd,  g = dy * w
///   dx = rstd * (g - x_hat * mean_j(g_j * x_hat_j))     (added to dx when `accumulate`)
///   dw += sum_rows dy * x_hat
/// With `gather`, row r's input was x[gather[r]]; dx is still written densely as dx[r] (the caller
/// scatters it, since gathered rows may repeat).
func rmsnormBackward(
    dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, rows: Int, dim: Int, accumulate: Bool,
    gather: UnsafePointer<Int32>? = nil
) {
    // dx rows are independent: parallel. dw is a reduction over rows: per-thread partial sums.
    let threads = min(Threads.count, max(1, rows / 16))
    let partial = UnsafeMutablePointer<Float>.allocate(capacity: threads * dim)
    partial.initialize(repeating: 0, count: threads * dim)
    defer { partial.deallocate() }
    parallelFor(threads) { chunks in
        for chunk in chunks {
            let lo = rows * chunk / threads, hi = rows * (chunk + 1) / threads
            let dw = partial + chunk * dim
            for r in lo..<hi {
                let src = x + (gather.map { Int($0[r]) } ?? r) * dim
                let g = dy + r * dim, out = dx + r * dim
                let s = rstd[r]
                var dot: Float = 0
                for j in 0..<dim {
                    let xh = src[j] * s
                    dot += g[j] * weight[j] * xh
                    dw[j] += g[j] * xh
                }
                let meanDot = dot / Float(dim)
                for j in 0..<dim {
                    let v = s * (g[j] * weight[j] - src[j] * s * meanDot)
                    out[j] = accumulate ? out[j] + v : v
                }
            }
        }
    }
    guard let dWeight else { return }  // a frozen norm (LoRA): only dx
    for c in 0..<threads {
        let dw = partial + c * dim
        for j in 0..<dim { dWeight[j] += dw[j] }
    }
}
