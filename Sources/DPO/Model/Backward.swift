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
        if gradients == nil { try zeroGradients() }
        let g = gradients!.pointer
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
                    lmHeadBackward(dx: b.dHeadX, dWeight: g + lay.lmHead, dlogp: dl.baseAddress!,
                                   x: w.headX.pointer, weight: p + lay.lmHead, labels: labels.baseAddress!,
                                   rows: R, hidden: H, vocab: c.vocabSize, logits: w.logits.pointer,
                                   logitsFromForward: true, bf16: bf16)  // untouched since this model's forward
                    let dRows = b.dHeadRows
                    rmsnormBackward(dx: dRows, dWeight: g + lay.finalNorm, dy: b.dHeadX, x: last,
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
            linearBackward(dx: b.dHidden, accumulateInput: false, dWeight: g + o.down,
                           dBias: o.downBias >= 0 ? g + o.downBias : nil, dy: dRes, x: b.dUp,
                           weight: p + o.down, rows: T, inFeatures: I, outFeatures: H, bf16: bf16)
            swigluBackward(dGate: b.dHidden, dUp: b.dUp, h: nil, dh: b.dHidden,
                           gate: w.gate[s].pointer, up: w.up[s].pointer, count: T * I)
            linearBackward(dx: dxn, accumulateInput: false, dWeight: g + o.gate,
                           dBias: o.gateBias >= 0 ? g + o.gateBias : nil, dy: b.dHidden, x: xn,
                           weight: p + o.gate, rows: T, inFeatures: H, outFeatures: I, bf16: bf16)
            linearBackward(dx: dxn, accumulateInput: true, dWeight: g + o.up,
                           dBias: o.upBias >= 0 ? g + o.upBias : nil, dy: b.dUp, x: xn,
                           weight: p + o.up, rows: T, inFeatures: H, outFeatures: I, bf16: bf16)
            dMid.update(from: dRes, count: T * H)
            rmsnormBackward(dx: dMid, dWeight: g + o.postNorm, dy: dxn, x: mid, rstd: w.rstd2[s].pointer,
                            weight: p + o.postNorm, rows: T, dim: H, accumulate: true)

            // Attention block. dMid holds d loss / d mid; mid = x + o_proj(attn), attn = attention(q, k, v),
            // q, k, v = rope'd projections of rmsnorm(x). They are recomputed here, attn inside
            // attentionBackward.
            rmsnormForward(xn, rstd: w.rstd1[s].pointer, x, weight: p + o.inputNorm, rows: T, dim: H, eps: eps)
            projectQKV(layer: o, xn: xn, q: w.q.pointer, k: w.k.pointer, v: w.v.pointer,
                       cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, rows: T)
            // d attn = dMid W_o
            gemm(bf16: bf16, m: T, n: a.qWidth, k: H, a: dMid, lda: H, b: p + o.o, ldb: a.qWidth, c: b.dAttn, ldc: a.qWidth)
            b.dk.update(repeating: 0, count: T * a.kvWidth)
            b.dv.update(repeating: 0, count: T * a.kvWidth)
            attentionBackward(dq: b.dq, dk: b.dk, dv: b.dv, dOut: b.dAttn,
                              out: w.attn.pointer, lse: w.lse[s].pointer, q: w.q.pointer,
                              k: w.k.pointer, v: w.v.pointer, segments: packed.segments, shape: a,
                              scratch: w.scratch.pointer, scratchCount: w.scratchCount)
            // dW_o += dMid^T attn (attn recomputed by attentionBackward)
            linearBackward(dx: nil, accumulateInput: false, dWeight: g + o.o,
                           dBias: o.oBias >= 0 ? g + o.oBias : nil, dy: dMid, x: w.attn.pointer,
                           weight: p + o.o, rows: T, inFeatures: a.qWidth, outFeatures: H, bf16: bf16)
            ropeApply(b.dq, cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, tokens: T,
                      heads: a.heads, headDim: a.headDim, inverse: true)
            ropeApply(b.dk, cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, tokens: T,
                      heads: a.kvHeads, headDim: a.headDim, inverse: true)
            linearBackward(dx: dxn, accumulateInput: false, dWeight: g + o.q, dBias: o.qBias >= 0 ? g + o.qBias : nil,
                           dy: b.dq, x: xn, weight: p + o.q, rows: T, inFeatures: H, outFeatures: a.qWidth, bf16: bf16)
            linearBackward(dx: dxn, accumulateInput: true, dWeight: g + o.k, dBias: o.kBias >= 0 ? g + o.kBias : nil,
                           dy: b.dk, x: xn, weight: p + o.k, rows: T, inFeatures: H, outFeatures: a.kvWidth, bf16: bf16)
            linearBackward(dx: dxn, accumulateInput: true, dWeight: g + o.v, dBias: o.vBias >= 0 ? g + o.vBias : nil,
                           dy: b.dv, x: xn, weight: p + o.v, rows: T, inFeatures: H, outFeatures: a.kvWidth, bf16: bf16)
            dRes.update(from: dMid, count: T * H)
            rmsnormBackward(dx: dRes, dWeight: g + o.inputNorm, dy: dxn, x: x, rstd: w.rstd1[s].pointer,
                            weight: p + o.inputNorm, rows: T, dim: H, accumulate: true)
        }

        // Embedding: scatter-add each token's gradient into its row (columns split across threads,
        // so repeated tokens never race).
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
}
