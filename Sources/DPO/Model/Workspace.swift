/// Activation and scratch buffers of one forward (and its backward), sized for a stream of up to
/// `tokens` tokens and `headRows` head rows. Allocated once and reused while batches fit.
///
/// With `keep` the buffers the backward needs are kept per layer; without (no-grad forwards such
/// as the reference model's), one layer's worth is reused for every layer.
final class Workspace {
    let tokens: Int, headRows: Int, keep: Bool
    /// Floats of one attention score matrix; `scratch` holds two per attention worker.
    let scratchCount: Int, scratchWorkers: Int
    let layerSlots: Int

    // Saved by the forward, per layer slot (see LlamaModel.forward for what each holds).
    let residual: [FloatBuffer]   // layer inputs; residual[L] is the last layer's output
    let mid: [FloatBuffer]        // residual stream after attention
    let rstd1: [FloatBuffer], rstd2: [FloatBuffer]
    let lse: [FloatBuffer]
    let gate: [FloatBuffer], up: [FloatBuffer]
    // Head rows: normed final hidden states and their rstd.
    let headX: FloatBuffer, headRstd: FloatBuffer
    // Temporaries. q, k, v (after RoPE) and the attention output are not kept per layer: the
    // backward recomputes q, k, v from the normed layer input (rmsnorm is recomputed anyway) and
    // the output from the attention probabilities. For SmolLM2-135M that keeps 4235 instead of
    // 5763 floats per token and layer, for about 3% more matrix-product FLOPs per step.
    let q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, attn: FloatBuffer
    let normed: FloatBuffer, ropeCos: FloatBuffer, ropeSin: FloatBuffer
    let scratch: FloatBuffer, logits: FloatBuffer
    /// Temporaries of one phase at a time (see BackwardBuffers): the forward's gated MLP product
    /// `hidden` [tokens, intermediate]; in the backward the head's, the MLP's or the attention's
    /// gradients. Sized for the backward only when the workspace keeps activations.
    let phase: FloatBuffer
    var hidden: UnsafeMutablePointer<Float> { phase.pointer }
    // Backward temporaries, allocated on first use.
    private(set) var grad: BackwardBuffers?

    init(config c: LlamaConfig, tokens: Int, headRows: Int, scratchCount: Int, keep: Bool) {
        self.tokens = tokens; self.headRows = headRows; self.scratchCount = scratchCount; self.keep = keep
        let h = c.hiddenSize, hd = c.resolvedHeadDim, inter = c.intermediateSize
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd
        layerSlots = keep ? c.numHiddenLayers : 1
        func slots(_ n: Int, _ width: Int) -> [FloatBuffer] { (0..<n).map { _ in FloatBuffer(count: tokens * width) } }
        residual = slots(keep ? c.numHiddenLayers + 1 : 2, h)
        mid = slots(layerSlots, h)
        rstd1 = slots(layerSlots, 1); rstd2 = slots(layerSlots, 1)
        lse = slots(layerSlots, c.numAttentionHeads)
        q = FloatBuffer(count: tokens * qW); attn = FloatBuffer(count: tokens * qW)
        k = FloatBuffer(count: tokens * kvW); v = FloatBuffer(count: tokens * kvW)
        gate = slots(layerSlots, inter); up = slots(layerSlots, inter)
        headX = FloatBuffer(count: headRows * h); headRstd = FloatBuffer(count: headRows)
        normed = FloatBuffer(count: tokens * h)
        phase = FloatBuffer(count: keep ? BackwardBuffers.phaseFloats(config: c, tokens: tokens, headRows: headRows)
                                        : tokens * inter)
        ropeCos = FloatBuffer(count: tokens * hd / 2); ropeSin = FloatBuffer(count: tokens * hd / 2)
        scratchWorkers = Threads.count
        self.scratch = FloatBuffer(count: 2 * scratchCount * scratchWorkers)
        logits = FloatBuffer(count: min(headRows, headChunkRows(vocab: c.vocabSize)) * c.vocabSize)
    }

    /// Whether models of these configs size their workspaces alike (and can share one).
    static func sameShapes(_ x: LlamaConfig, _ y: LlamaConfig) -> Bool {
        x.hiddenSize == y.hiddenSize && x.intermediateSize == y.intermediateSize
            && x.numHiddenLayers == y.numHiddenLayers && x.numAttentionHeads == y.numAttentionHeads
            && x.numKeyValueHeads == y.numKeyValueHeads && x.resolvedHeadDim == y.resolvedHeadDim
            && x.vocabSize == y.vocabSize
    }

    func fits(tokens t: Int, headRows r: Int, scratchCount s: Int, keep k: Bool) -> Bool {
        t <= tokens && r <= headRows && s <= scratchCount && Threads.count <= scratchWorkers && (keep || !k)
    }

    /// Slot of layer l's saved buffers.
    @inline(__always) func slot(_ l: Int) -> Int { keep ? l : 0 }
    /// Residual slot of layer l's input (l) or output (l + 1).
    @inline(__always) func residualSlot(_ l: Int) -> Int { keep ? l : l % 2 }

    func backwardBuffers(config c: LlamaConfig) -> BackwardBuffers {
        if let grad { return grad }
        let b = BackwardBuffers(config: c, tokens: tokens, headRows: headRows, phase: phase)
        grad = b
        return b
    }
}

/// Gradient temporaries of the backward. dResidual, dMid and dNormed live through every phase;
/// the rest share the workspace's `phase` buffer, one phase at a time:
///   head:      dHeadX, dHeadRows                     [headRows, hidden] each
///   MLP:       dHidden (d gate in place), dUp        [tokens, intermediate] each; the recomputed
///              gated product h goes into dUp until d up overwrites it
///   attention: dAttn, dq [tokens, qWidth]; dk, dv [tokens, kvWidth]
final class BackwardBuffers {
    let dResidual: FloatBuffer, dMid: FloatBuffer, dNormed: FloatBuffer
    let dHeadX: UnsafeMutablePointer<Float>, dHeadRows: UnsafeMutablePointer<Float>
    let dHidden: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>
    let dAttn: UnsafeMutablePointer<Float>, dq: UnsafeMutablePointer<Float>
    let dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>

    /// Floats of the largest phase.
    static func phaseFloats(config c: LlamaConfig, tokens: Int, headRows: Int) -> Int {
        let hd = c.resolvedHeadDim
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd
        return max(2 * headRows * c.hiddenSize, tokens * 2 * c.intermediateSize, tokens * (2 * qW + 2 * kvW))
    }

    init(config c: LlamaConfig, tokens: Int, headRows: Int, phase: FloatBuffer) {
        let h = c.hiddenSize, hd = c.resolvedHeadDim, inter = c.intermediateSize
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd
        precondition(phase.count >= BackwardBuffers.phaseFloats(config: c, tokens: tokens, headRows: headRows),
                     "BackwardBuffers: phase buffer too small (internal)")
        dResidual = FloatBuffer(count: tokens * h); dMid = FloatBuffer(count: tokens * h)
        dNormed = FloatBuffer(count: tokens * h)
        let base = phase.pointer  // owned by the workspace, which also owns these buffers
        dHeadX = base; dHeadRows = base + headRows * h
        dHidden = base; dUp = base + tokens * inter
        dAttn = base; dq = base + tokens * qW; dk = base + 2 * tokens * qW; dv = base + 2 * tokens * qW + tokens * kvW
    }
}
