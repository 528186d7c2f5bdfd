// The two products of a frozen linear layer (LoRA's base weights): the forward y = x W^T and the
// input gradient dx = dy W. No weight gradient exists for a frozen W. Every frozen matrix of the
// LoRA path goes through these two functions, so that a different storage of W (a quantized GGUF
// tensor dequantized tile by tile) needs one overload of each and nothing else.

/// y[rows, out] (+)= x[rows, in] W^T, W [out, in] (nn.Linear's layout); `accumulate` adds to y.
@inline(__always)
func frozenLinearForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                         rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, bf16: Bool) {
    gemm(bf16: bf16, transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: w,
         ldb: inFeatures, beta: accumulate ? 1 : 0, c: y, ldc: outFeatures)
}

/// dx[rows, in] (+)= dy[rows, out] W, W [out, in]; `accumulate` adds to dx.
@inline(__always)
func frozenLinearInputGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                               rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, bf16: Bool) {
    gemm(bf16: bf16, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures, b: w, ldb: inFeatures,
         beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
}
