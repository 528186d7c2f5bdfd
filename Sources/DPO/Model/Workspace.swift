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
    /// Backward temporaries, allocated with the workspace when it keeps activations.
    private let grad: BackwardBuffers?

    /// Allocates the buffers `sizes` describes, after checking they fit (`MemoryLimit`): a
    /// workspace too large for this process is `DPOError.outOfMemory`, never a trap.
    init(config c: LlamaConfig, sizes: WorkspaceSizes) throws {
        try MemoryLimit.check(sizes.totalFloats * 4, "the activations of \(sizes.tokens) tokens (\(sizes.headRows) head rows)")
        tokens = sizes.tokens; headRows = sizes.headRows; scratchCount = sizes.scratchCount; keep = sizes.keep
        layerSlots = sizes.layerSlots
        scratchWorkers = sizes.scratchWorkers
        let f = sizes.floats  // every count below is bounded by the check above
        func slots(_ n: Int, _ count: Double) -> [FloatBuffer] { (0..<n).map { _ in FloatBuffer(count: Int(count)) } }
        residual = slots(sizes.residualSlots, f.residual)
        mid = slots(layerSlots, f.residual)
        rstd1 = slots(layerSlots, f.rstd); rstd2 = slots(layerSlots, f.rstd)
        lse = slots(layerSlots, f.lse)
        q = FloatBuffer(count: Int(f.q)); attn = FloatBuffer(count: Int(f.q))
        k = FloatBuffer(count: Int(f.kv)); v = FloatBuffer(count: Int(f.kv))
        gate = slots(layerSlots, f.intermediate); up = slots(layerSlots, f.intermediate)
        headX = FloatBuffer(count: Int(f.headX)); headRstd = FloatBuffer(count: Int(f.headRstd))
        normed = FloatBuffer(count: Int(f.residual))
        phase = FloatBuffer(count: Int(f.phase))
        ropeCos = FloatBuffer(count: Int(f.rope)); ropeSin = FloatBuffer(count: Int(f.rope))
        scratch = FloatBuffer(count: Int(f.scratch))
        logits = FloatBuffer(count: Int(f.logits))
        grad = keep ? BackwardBuffers(config: c, tokens: tokens, headRows: headRows, phase: phase) : nil
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

    /// The backward's temporaries (a workspace that keeps activations has them).
    func backwardBuffers() throws -> BackwardBuffers {
        guard let grad else { throw DPOError.internal("backward on a workspace that keeps no activations") }
        return grad
    }
}

/// The floats of every buffer of a workspace: the one place its memory is computed, read by the
/// allocation (`Workspace.init`) and by the memory check before it. Counts are Doubles so that no
/// product of caller-given sizes can overflow before the check.
struct WorkspaceSizes {
    let tokens: Int, headRows: Int, scratchCount: Int, keep: Bool, scratchWorkers: Int
    let layerSlots: Int, residualSlots: Int
    /// Floats of one buffer of each kind.
    struct Floats {
        var residual = 0.0, rstd = 0.0, lse = 0.0, intermediate = 0.0, q = 0.0, kv = 0.0
        var headX = 0.0, headRstd = 0.0, phase = 0.0, rope = 0.0, scratch = 0.0, logits = 0.0
        var backward = 0.0  // BackwardBuffers' dResidual, dMid, dNormed
    }
    let floats: Floats

    init(config c: LlamaConfig, tokens: Int, headRows: Int, scratchCount: Int, keep: Bool,
         scratchWorkers: Int = Threads.count) {
        self.tokens = tokens; self.headRows = headRows; self.scratchCount = scratchCount; self.keep = keep
        self.scratchWorkers = scratchWorkers
        layerSlots = keep ? c.numHiddenLayers : 1
        residualSlots = keep ? c.numHiddenLayers + 1 : 2
        let t = Double(tokens), r = Double(headRows), h = Double(c.hiddenSize), hd = Double(c.resolvedHeadDim)
        let inter = Double(c.intermediateSize)
        let qW = Double(c.numAttentionHeads) * hd, kvW = Double(c.numKeyValueHeads) * hd
        var f = Floats()
        f.residual = t * h; f.rstd = t; f.lse = t * Double(c.numAttentionHeads); f.intermediate = t * inter
        f.q = t * qW; f.kv = t * kvW
        f.headX = r * h; f.headRstd = r
        // The backward's largest phase (see BackwardBuffers), or the forward's gated product.
        f.phase = keep ? max(2 * r * h, t * 2 * inter, t * (2 * qW + 2 * kvW)) : t * inter
        f.rope = t * hd / 2
        f.scratch = 2 * Double(scratchCount) * Double(scratchWorkers)
        f.logits = min(r, Double(headChunkRows(vocab: c.vocabSize))) * Double(c.vocabSize)
        f.backward = keep ? 3 * t * h : 0
        floats = f
    }

    /// All floats of the workspace, backward temporaries included.
    var totalFloats: Double {
        let f = floats, slots = Double(layerSlots)
        return Double(residualSlots) * f.residual + slots * (f.residual + 2 * f.rstd + f.lse + 2 * f.intermediate)
            + 2 * f.q + 2 * f.kv + f.headX + f.headRstd + f.residual + f.phase + 2 * f.rope + f.scratch
            + f.logits + f.backward
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

    init(config c: LlamaConfig, tokens: Int, headRows: Int, phase: FloatBuffer) {
        let h = c.hiddenSize, hd = c.resolvedHeadDim, inter = c.intermediateSize
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd
        dResidual = FloatBuffer(count: tokens * h); dMid = FloatBuffer(count: tokens * h)
        dNormed = FloatBuffer(count: tokens * h)
        let base = phase.pointer  // owned by the workspace, which also owns these buffers
        dHeadX = base; dHeadRows = base + headRows * h
        dHidden = base; dUp = base + tokens * inter
        dAttn = base; dq = base + tokens * qW; dk = base + 2 * tokens * qW; dv = base + 2 * tokens * qW + tokens * kvW
    }
}
