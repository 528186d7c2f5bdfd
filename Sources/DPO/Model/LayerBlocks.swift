// The pieces of a decoder layer that the training forward and the KV-cached decode share.

extension LlamaModel {
    /// q, k, v = the projections of the normed rows xn[rows, hidden] (with biases), then RoPE on q
    /// and k with the given per-row tables.
    func projectQKV(layer o: LayerOffsets, index l: Int, xn: UnsafePointer<Float>, q: UnsafeMutablePointer<Float>,
                    k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), a = attentionShape, H = config.hiddenSize
        adaptedLinear(l, .q, q, xn, bias: o.qBias >= 0 ? p + o.qBias : nil, rows: T, inFeatures: H, outFeatures: a.qWidth)
        adaptedLinear(l, .k, k, xn, bias: o.kBias >= 0 ? p + o.kBias : nil, rows: T, inFeatures: H, outFeatures: a.kvWidth)
        adaptedLinear(l, .v, v, xn, bias: o.vBias >= 0 ? p + o.vBias : nil, rows: T, inFeatures: H, outFeatures: a.kvWidth)
        ropeApply(q, cos: cos, sin: sin, tokens: T, heads: a.heads, headDim: a.headDim)
        ropeApply(k, cos: cos, sin: sin, tokens: T, heads: a.kvHeads, headDim: a.headDim)
    }

    /// residual[rows, hidden] += o_proj(attn) (+ bias).
    func addOutputProjection(layer o: LayerOffsets, index l: Int, attn: UnsafePointer<Float>,
                             residual: UnsafeMutablePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), a = attentionShape, H = config.hiddenSize
        frozenLinearForward(residual, attn, weight: frozenWeight(l, .o), rows: T, inFeatures: a.qWidth, outFeatures: H,
                            accumulate: true, bf16: bf16)
        loraLinear(l, .o)?.forward(residual, attn, rows: T)
        if o.oBias >= 0 { addBias(residual, p + o.oBias, rows: T, width: H) }
    }

    /// residual[rows, hidden] += down(silu(gate(xn)) * up(xn)) (+ biases). `gate` and `up` keep
    /// the projections (the backward needs them); `hidden` receives the gated product (it may be
    /// `gate` when the projections need not be kept).
    func addMLP(layer o: LayerOffsets, index l: Int, xn: UnsafePointer<Float>, gate: UnsafeMutablePointer<Float>,
                up: UnsafeMutablePointer<Float>, hidden: UnsafeMutablePointer<Float>,
                residual: UnsafeMutablePointer<Float>, rows T: Int) {
        let p = UnsafePointer(parameters.pointer), H = config.hiddenSize, I = config.intermediateSize
        adaptedLinear(l, .gate, gate, xn, bias: o.gateBias >= 0 ? p + o.gateBias : nil, rows: T, inFeatures: H, outFeatures: I)
        adaptedLinear(l, .up, up, xn, bias: o.upBias >= 0 ? p + o.upBias : nil, rows: T, inFeatures: H, outFeatures: I)
        swigluForward(hidden, gate: gate, up: up, count: T * I)
        frozenLinearForward(residual, hidden, weight: frozenWeight(l, .down), rows: T, inFeatures: I, outFeatures: H, accumulate: true, bf16: bf16)
        loraLinear(l, .down)?.forward(residual, hidden, rows: T)
        if o.downBias >= 0 { addBias(residual, p + o.downBias, rows: T, width: H) }
    }

    /// y = x W^T (+ bias) of layer l's module m, plus its LoRA adapter's share when it has one.
    /// (The bias is added before the adapter's share, as in PEFT, where the base layer's output
    /// includes it.)
    @inline(__always)
    func adaptedLinear(_ l: Int, _ m: LoraModule, _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                       bias: UnsafePointer<Float>?, rows: Int, inFeatures: Int, outFeatures: Int) {
        frozenLinearForward(y, x, weight: frozenWeight(l, m), rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                            accumulate: false, bf16: bf16)
        if let bias { addBias(y, bias, rows: rows, width: outFeatures) }
        loraLinear(l, m)?.forward(y, x, rows: rows)
    }
}
