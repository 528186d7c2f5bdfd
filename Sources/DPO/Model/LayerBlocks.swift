// The pieces of a decoder layer that the training forward and the KV-cached decode share.

extension LlamaModel {
    /// q, k, v = the projections of the normed rows xn[rows, hidden] (with biases), then RoPE on q
    /// and k with the given per-row tables.
    func projectQKV(layer o: LayerOffsets, xn: UnsafePointer<Float>, q: UnsafeMutablePointer<Float>,
                    k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), a = attentionShape, H = config.hiddenSize
        linearForward(q, xn, weight: p + o.q, bias: o.qBias >= 0 ? p + o.qBias : nil, rows: T, inFeatures: H, outFeatures: a.qWidth, bf16: bf16)
        linearForward(k, xn, weight: p + o.k, bias: o.kBias >= 0 ? p + o.kBias : nil, rows: T, inFeatures: H, outFeatures: a.kvWidth, bf16: bf16)
        linearForward(v, xn, weight: p + o.v, bias: o.vBias >= 0 ? p + o.vBias : nil, rows: T, inFeatures: H, outFeatures: a.kvWidth, bf16: bf16)
        ropeApply(q, cos: cos, sin: sin, tokens: T, heads: a.heads, headDim: a.headDim)
        ropeApply(k, cos: cos, sin: sin, tokens: T, heads: a.kvHeads, headDim: a.headDim)
    }

    /// residual[rows, hidden] += o_proj(attn) (+ bias).
    func addOutputProjection(layer o: LayerOffsets, attn: UnsafePointer<Float>,
                             residual: UnsafeMutablePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), a = attentionShape, H = config.hiddenSize
        gemm(bf16: bf16, transB: true, m: T, n: H, k: a.qWidth, a: attn, lda: a.qWidth, b: p + o.o, ldb: a.qWidth,
              beta: 1, c: residual, ldc: H)
        if o.oBias >= 0 { addBias(residual, p + o.oBias, rows: T, width: H) }
    }

    /// residual[rows, hidden] += down(silu(gate(xn)) * up(xn)) (+ biases). `gate` and `up` keep
    /// the projections (the backward needs them); `hidden` receives the gated product (it may be
    /// `gate` when the projections need not be kept).
    func addMLP(layer o: LayerOffsets, xn: UnsafePointer<Float>, gate: UnsafeMutablePointer<Float>,
                up: UnsafeMutablePointer<Float>, hidden: UnsafeMutablePointer<Float>,
                residual: UnsafeMutablePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), H = config.hiddenSize, I = config.intermediateSize
        linearForward(gate, xn, weight: p + o.gate, bias: o.gateBias >= 0 ? p + o.gateBias : nil, rows: T, inFeatures: H, outFeatures: I, bf16: bf16)
        linearForward(up, xn, weight: p + o.up, bias: o.upBias >= 0 ? p + o.upBias : nil, rows: T, inFeatures: H, outFeatures: I, bf16: bf16)
        swigluForward(hidden, gate: gate, up: up, count: T * I)
        gemm(bf16: bf16, transB: true, m: T, n: H, k: I, a: hidden, lda: I, b: p + o.down, ldb: I, beta: 1, c: residual, ldc: H)
        if o.downBias >= 0 { addBias(residual, p + o.downBias, rows: T, width: H) }
    }
}
