extension LlamaModel {
    /// Backward of the last `forward(_:head:keepActivations: true)`: given d loss / d logp for each
    /// head row, adds d loss / d parameter into `gradients` (allocated and zeroed on first use;
    /// otherwise accumulated, so micro-batches sum). Consumes the kept activations.
    public func backward(dlogp: [Float]) throws {
        guard let pend = pending, let w = workspace else {
            throw DPOError.wrongState("backward needs a preceding forward with keepActivations: true")
        }
        guard dlogp.count == pend.head.count else {
            throw DPOError.invalidArgument("backward: \(dlogp.count) gradients for \(pend.head.count) head rows")
        }
        if let bad = dlogp.firstIndex(where: { !$0.isFinite }) {
            throw DPOError.numeric("backward: d loss / d logp[\(bad)] is \(dlogp[bad])")
        }
        pending = nil
        // With a LoRA adapter the base is frozen: no weight gradient of it is computed, only the
        // input gradients through it and the gradients of the adapter that ran the forward.
        let frozen = adapter != nil
        if !frozen { try checkFullWeights("the backward of a model without a LoRA adapter (full fine-tuning)") }
        if frozen && pend.lora == nil { return }  // adapters were off: nothing trainable was used
        let g: UnsafeMutablePointer<Float>?
        if frozen {
            g = nil
            if pend.lora!.adapter.gradients == nil { try pend.lora!.adapter.zeroGradients() }
        } else {
            if gradients == nil { try zeroGradients() }
            g = gradients!.pointer
        }
        lora = pend.lora
        defer { lora = nil }
        let c = config, lay = layout, a = attentionShape
        let packed = pend.packed, head = pend.head
        let T = packed.count, R = head.count, H = c.hiddenSize, I = c.intermediateSize
        let eps = Float(c.rmsNormEps)
        let p = UnsafePointer(parameters.pointer)
        let b = try w.backwardBuffers()
        let dRes = b.dResidual.pointer, dMid = b.dMid.pointer, dxn = b.dNormed.pointer
        let xn = w.normed.pointer

        // LM head and final norm: only the head rows receive gradient.
        dRes.update(repeating: 0, count: T * H)
        let last = w.residual[w.residualSlot(c.numHiddenLayers)].pointer
        dlogp.withUnsafeBufferPointer { dl in
            head.labels.withUnsafeBufferPointer { labels in
                head.rows.withUnsafeBufferPointer { rows in
                    lmHeadBackward(dx: b.dHeadX, dWeight: g.map { $0 + lay.lmHead }, dlogp: dl.baseAddress!,
                                   x: w.headX.pointer, weight: frozenHead(), labels: labels.baseAddress!,
                                   rows: R, hidden: H, vocab: c.vocabSize, logits: w.logits.pointer,
                                   logitsFromForward: true, bf16: bf16)  // untouched since this model's forward
                    let dRows = b.dHeadRows
                    rmsnormBackward(dx: dRows, dWeight: g.map { $0 + lay.finalNorm }, dy: b.dHeadX, x: last,
                                    rstd: w.headRstd.pointer, weight: p + lay.finalNorm, rows: R, dim: H,
                                    accumulate: false, gather: rows.baseAddress!)
                    // Scatter: rows may repeat, so this stays one sequential pass (R x H adds).
                    for r in 0..<R {
                        let dst = dRes + Int(rows[r]) * H, src = dRows + r * H
                        for j in 0..<H { dst[j] += src[j] }
                    }
                }
            }
        }

        for l in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
            let o = lay.layers[l], s = w.slot(l)
            let x = w.residual[w.residualSlot(l)].pointer, mid = w.mid[s].pointer
            // MLP block. dRes holds d loss / d out; out = mid + down(h), h = silu(gate) * up.
            rmsnormForward(xn, rstd: w.rstd2[s].pointer, mid, weight: p + o.postNorm, rows: T, dim: H, eps: eps)
            // h = silu(gate) * up, recomputed into dUp's place (d up overwrites it after its last use).
            swigluForward(b.dUp, gate: w.gate[s].pointer, up: w.up[s].pointer, count: T * I)
            layerBackward(l, .down, dx: b.dHidden, accumulate: false, g: g, weight: o.down, bias: o.downBias,
                          dy: dRes, x: b.dUp, rows: T, inFeatures: I, outFeatures: H)
            swigluBackward(dGate: b.dHidden, dUp: b.dUp, h: nil, dh: b.dHidden,
                           gate: w.gate[s].pointer, up: w.up[s].pointer, count: T * I)
            layerBackward(l, .gate, dx: dxn, accumulate: false, g: g, weight: o.gate, bias: o.gateBias,
                          dy: b.dHidden, x: xn, rows: T, inFeatures: H, outFeatures: I)
            layerBackward(l, .up, dx: dxn, accumulate: true, g: g, weight: o.up, bias: o.upBias,
                          dy: b.dUp, x: xn, rows: T, inFeatures: H, outFeatures: I)
            dMid.update(from: dRes, count: T * H)
            rmsnormBackward(dx: dMid, dWeight: g.map { $0 + o.postNorm }, dy: dxn, x: mid, rstd: w.rstd2[s].pointer,
                            weight: p + o.postNorm, rows: T, dim: H, accumulate: true)

            // Attention block. dMid holds d loss / d mid; mid = x + o_proj(attn), attn = attention(q, k, v),
            // q, k, v = rope'd projections of rmsnorm(x). They are recomputed here, attn inside
            // attentionBackward.
            rmsnormForward(xn, rstd: w.rstd1[s].pointer, x, weight: p + o.inputNorm, rows: T, dim: H, eps: eps)
            projectQKV(layer: o, index: l, xn: xn, q: w.q.pointer, k: w.k.pointer, v: w.v.pointer,
                       cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, rows: T)
            // d attn = dMid W_o (+ the adapter's share)
            frozenLinearInputGradient(b.dAttn, dMid, weight: frozenWeight(l, .o), rows: T, inFeatures: a.qWidth, outFeatures: H,
                                      accumulate: false, bf16: bf16)
            loraLinear(l, .o)?.addInputGradient(b.dAttn, dy: dMid, rows: T)
            b.dk.update(repeating: 0, count: T * a.kvWidth)
            b.dv.update(repeating: 0, count: T * a.kvWidth)
            attentionBackward(dq: b.dq, dk: b.dk, dv: b.dv, dOut: b.dAttn,
                              out: w.attn.pointer, lse: w.lse[s].pointer, q: w.q.pointer,
                              k: w.k.pointer, v: w.v.pointer, segments: packed.segments, shape: a,
                              scratch: w.scratch.pointer, scratchCount: w.scratchCount)
            // dW_o += dMid^T attn (attn recomputed by attentionBackward)
            layerBackward(l, .o, dx: nil, accumulate: false, g: g, weight: o.o, bias: o.oBias,
                          dy: dMid, x: w.attn.pointer, rows: T, inFeatures: a.qWidth, outFeatures: H)
            ropeApply(b.dq, cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, tokens: T,
                      heads: a.heads, headDim: a.headDim, inverse: true)
            ropeApply(b.dk, cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, tokens: T,
                      heads: a.kvHeads, headDim: a.headDim, inverse: true)
            layerBackward(l, .q, dx: dxn, accumulate: false, g: g, weight: o.q, bias: o.qBias,
                          dy: b.dq, x: xn, rows: T, inFeatures: H, outFeatures: a.qWidth)
            layerBackward(l, .k, dx: dxn, accumulate: true, g: g, weight: o.k, bias: o.kBias,
                          dy: b.dk, x: xn, rows: T, inFeatures: H, outFeatures: a.kvWidth)
            layerBackward(l, .v, dx: dxn, accumulate: true, g: g, weight: o.v, bias: o.vBias,
                          dy: b.dv, x: xn, rows: T, inFeatures: H, outFeatures: a.kvWidth)
            dRes.update(from: dMid, count: T * H)
            rmsnormBackward(dx: dRes, dWeight: g.map { $0 + o.inputNorm }, dy: dxn, x: x, rstd: w.rstd1[s].pointer,
                            weight: p + o.inputNorm, rows: T, dim: H, accumulate: true)
        }

        // Embedding: scatter-add each token's gradient into its row (columns split across threads,
        // so repeated tokens never race). Frozen with an adapter.
        guard let g else { return }
        let dEmbed = g + lay.embed
        packed.tokens.withUnsafeBufferPointer { tok in
            let tok = tok.baseAddress!
            parallelFor(H, grain: 64) { cols in
                for t in 0..<T {
                    let src = dRes + t * H, dst = dEmbed + Int(tok[t]) * H
                    for j in cols { dst[j] += src[j] }
                }
            }
        }
    }

    /// Backward of layer l's linear module m, given dy [rows, out] and its input x [rows, in]:
    /// dx (+)= dy W (+ the adapter's share); weight and bias gradients into `g` when the base
    /// trains, the adapter's A and B gradients when the module is adapted (then `g` is nil and no
    /// gradient of W is computed).
    func layerBackward(_ l: Int, _ m: LoraModule, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                       g: UnsafeMutablePointer<Float>?, weight: Int, bias: Int, dy: UnsafePointer<Float>,
                       x: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        let p = UnsafePointer(parameters.pointer)
        if let g {
            linearBackward(dx: dx, accumulateInput: accumulate, dWeight: g + weight, dBias: bias >= 0 ? g + bias : nil,
                           dy: dy, x: x, weight: p + weight, rows: rows, inFeatures: inFeatures,
                           outFeatures: outFeatures, bf16: bf16)
        } else if let dx {
            frozenLinearInputGradient(dx, dy, weight: frozenWeight(l, m), rows: rows, inFeatures: inFeatures,
                                      outFeatures: outFeatures, accumulate: accumulate, bf16: bf16)
        }
        guard let ll = loraLinear(l, m), let pass = lora, let ag = pass.adapter.gradients,
              let slot = pass.adapter.slots[l][m.rawValue] else { return }
        // o_proj's input gradient was added before the attention backward (which leaves the LoRA
        // scratch alone, so its dy B is still there).
        if let dx, m != .o { ll.addInputGradient(dx, dy: dy, rows: rows) }
        ll.addParameterGradients(dA: ag.pointer + slot.a, dB: ag.pointer + slot.b, dy: dy, x: x, rows: rows,
                                 dyBComputed: dx != nil || m == .o)
    }
}
