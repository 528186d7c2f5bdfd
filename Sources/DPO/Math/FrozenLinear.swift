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

/// Where a frozen linear layer's W [out, in] lives: in the fp32 parameter buffer, or kept in its
/// GGUF block form (a base loaded with `keepBaseQuantized`, products dequantizing tile by tile).
enum FrozenWeight {
    /// fp32 W, products by one sgemm (`gemm`).
    case fp32(UnsafePointer<Float>)
    /// fp32 W, products cut into the tiles of `QuantizedMatrix`'s (FrozenLinearTiles): on the
    /// dequantized values of a quantized W they give that W's products bit for bit.
    case fp32Tiled(UnsafePointer<Float>)
    /// A quantized W.
    case quantized(QuantizedMatrix)
}

/// y[rows, out] (+)= x[rows, in] W^T for any storage of W.
@inline(__always)
func frozenLinearForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weight: FrozenWeight,
                         rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, bf16: Bool) {
    switch weight {
    case .fp32(let w):
        frozenLinearForward(y, x, weight: w, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                            accumulate: accumulate, bf16: bf16)
    case .fp32Tiled(let w):
        QuantizedMatrix.forward(x, tokens: rows, weight: w, outFeatures: outFeatures, inFeatures: inFeatures,
                                into: y, accumulate: accumulate, bf16: bf16)
    case .quantized(let q):
        q.forward(x, tokens: rows, into: y, accumulate: accumulate, bf16: bf16)
    }
}

/// dx[rows, in] (+)= dy[rows, out] W for any storage of W.
@inline(__always)
func frozenLinearInputGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, weight: FrozenWeight,
                               rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, bf16: Bool) {
    switch weight {
    case .fp32(let w):
        frozenLinearInputGradient(dx, dy, weight: w, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                  accumulate: accumulate, bf16: bf16)
    case .fp32Tiled(let w):
        QuantizedMatrix.inputGradient(dy, tokens: rows, weight: w, outFeatures: outFeatures, inFeatures: inFeatures,
                                      into: dx, accumulate: accumulate, bf16: bf16)
    case .quantized(let q):
        q.inputGradient(dy, tokens: rows, into: dx, accumulate: accumulate, bf16: bf16)
    }
}
