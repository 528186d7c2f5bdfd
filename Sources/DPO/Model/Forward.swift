extension LlamaModel {
    /// Runs the decoder over a packed stream and the LM head on `head`'s rows.
    ///
    /// With `keepActivations`, the buffers the backward needs are kept until the next forward, and
    /// `backward(dlogp:)` may follow. Without, the forward holds one layer's activations at a time.
    /// With a LoRA adapter (LoraModel.swift) each adapted layer adds its share; a forward that keeps
    /// activations is a training forward, the only kind that applies the adapter's dropout.
    public func forward(_ packed: PackedTokens, head: HeadQuery, keepActivations: Bool) throws -> HeadOutputs {
        try forward(packed, head: head, keepActivations: keepActivations, workspaceOf: self)
    }

    /// A forward without kept activations can run in the workspace of another model of the same
    /// shape that has no backward pending (a trainer's reference in its policy's workspace, which
    /// saves the reference a workspace of its own); otherwise the model uses its own.
    func forward(_ packed: PackedTokens, head: HeadQuery, keepActivations: Bool,
                 workspaceOf host: LlamaModel) throws -> HeadOutputs {
        try packed.validate(vocabSize: config.vocabSize)
        try head.validate(tokens: packed.count, vocabSize: config.vocabSize)
        pending = nil
        let c = config, lay = layout, a = attentionShape
        let T = packed.count, R = head.count, H = c.hiddenSize
        let eps = Float(c.rmsNormEps)
        let scratchCount = attentionScratchCount(packed.segments)
        let borrow = host !== self && !keepActivations && host.pending == nil
            && Workspace.sameShapes(host.config, c)
        let w = try (borrow ? host : self).workspaceFor(tokens: T, headRows: R, scratch: scratchCount,
                                                    keep: keepActivations)
        let p = UnsafePointer(parameters.pointer)
        lora = try beginLoraPass(tokens: T, training: keepActivations)
        defer { lora = nil }

        packed.positions.withUnsafeBufferPointer { pos in
            ropeTables(cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, positions: pos.baseAddress!,
                       tokens: T, invFreq: invFreq)
        }
        // Embedding lookup.
        let x0 = w.residual[0].pointer
        packed.tokens.withUnsafeBufferPointer { embed($0.baseAddress!, count: T, into: x0) }
        for l in 0..<c.numHiddenLayers {
            let o = lay.layers[l], s = w.slot(l)
            let x = w.residual[w.residualSlot(l)].pointer
            let out = w.residual[w.residualSlot(l + 1)].pointer
            let mid = w.mid[s].pointer, xn = w.normed.pointer
            let q = w.q.pointer, k = w.k.pointer, v = w.v.pointer
            // Attention block: mid = x + o_proj(attention(rope(q), rope(k), v)) of rmsnorm(x).
            rmsnormForward(xn, rstd: w.rstd1[s].pointer, x, weight: p + o.inputNorm, rows: T, dim: H, eps: eps)
            projectQKV(layer: o, index: l, xn: xn, q: q, k: k, v: v, cos: w.ropeCos.pointer, sin: w.ropeSin.pointer, rows: T)
            attentionForward(out: w.attn.pointer, lse: w.lse[s].pointer, q: q, k: k, v: v,
                             segments: packed.segments, shape: a, scratch: w.scratch.pointer,
                             scratchCount: w.scratchCount)
            mid.update(from: x, count: T * H)
            addOutputProjection(layer: o, index: l, attn: w.attn.pointer, residual: mid, rows: T)
            // MLP block: out = mid + down(silu(gate(xn)) * up(xn)), xn = rmsnorm(mid).
            rmsnormForward(xn, rstd: w.rstd2[s].pointer, mid, weight: p + o.postNorm, rows: T, dim: H, eps: eps)
            out.update(from: mid, count: T * H)
            addMLP(layer: o, index: l, xn: xn, gate: w.gate[s].pointer, up: w.up[s].pointer, hidden: w.hidden,
                   residual: out, rows: T)
        }
        // Final norm and LM head on the requested rows only.
        var result = HeadOutputs(logps: [], entropy: [], meanLogit: [], argmaxHit: [], logSumP2: [])
        let last = w.residual[w.residualSlot(c.numHiddenLayers)].pointer
        head.rows.withUnsafeBufferPointer { rows in
            head.labels.withUnsafeBufferPointer { labels in
                rmsnormForward(w.headX.pointer, rstd: w.headRstd.pointer, last, weight: p + lay.finalNorm,
                               rows: R, dim: H, eps: eps, gather: rows.baseAddress!)
                lmHeadForward(x: w.headX.pointer, weight: frozenHead(), labels: labels.baseAddress!,
                              rows: R, hidden: H, vocab: c.vocabSize, logits: w.logits.pointer, out: &result,
                              bf16: bf16)
            }
        }
        if keepActivations { pending = PendingBackward(packed: packed, head: head, lora: lora) }
        return result
    }
}

/// rows x width matrix += bias (broadcast over rows).
func addBias(_ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, width: Int) {
    parallelFor(rows, grain: 64) { range in
        for t in range {
            let row = y + t * width
            for j in 0..<width { row[j] += bias[j] }
        }
    }
}
