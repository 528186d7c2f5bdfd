/// What DPO and SFT training share: gradient accumulation into the model's gradient buffer, a
/// guarded backward that leaves nothing changed when gradients are not finite, global-norm
/// clipping, the learning-rate schedule and AdamW, and the counters a checkpoint restores.
final class OptimizationState {
    let model: LlamaModel
    var config: OptimizerConfig
    let adam: AdamW
    /// Optimizer steps taken (transformers' `global_step`).
    var globalStep = 0
    /// Micro-batches whose gradients are in the gradient buffer, waiting for the optimizer. While
    /// there are some, this state holds the model's gradient buffer (`gradientHolder`).
    var pendingMicroBatches = 0 {
        didSet {
            if pendingMicroBatches > 0 { model.gradientHolder = self } else if model.gradientHolder === self { model.gradientHolder = nil }
        }
    }
    /// Cumulative non-pad tokens trained on (TRL's `num_tokens`).
    var numTokens = 0
    var rng: Xoshiro256
    /// Copy of the accumulated gradients taken before a micro-batch's backward (accumulation only).
    private var backup: FloatBuffer?
    /// The ranks of data-parallel training (see Communicator, DataParallel.swift), nil for one process.
    private(set) var communicator: Communicator?
    /// Norm of the gradient buffer computed by the last guarded backward. Only a caller that runs
    /// the optimizer right after its own backward may reuse it (a host can change the buffer in
    /// between through the distributed grain).
    private(set) var lastBackwardNorm = Double.nan

    /// The LoRA adapter this state trains (nil: the whole model). Fixed at creation: the
    /// optimizer moments belong to it.
    let adapter: LoraAdapter?

    init(model: LlamaModel, config: OptimizerConfig) throws {
        self.model = model
        self.config = config
        adapter = model.adapter
        adam = try AdamW(tensors: model.trainableTensors, count: model.trainableParameters.count)
        rng = Xoshiro256(seed: config.seed)
    }

    /// Refuses to go on when the model's adapter is no longer the one this state trains.
    func checkTrained() throws {
        if model.adapter !== adapter {
            throw DPOError.wrongState(adapter == nil
                ? "a LoRA adapter was attached to the model after its trainer was created: create a new trainer"
                : "the model's LoRA adapter was detached, merged or replaced after its trainer was created: create a new trainer")
        }
    }

    /// Runs `backward` into the gradient buffer (scaled by the caller) and checks the result; if any
    /// gradient is not finite, the buffer is put back as it was and a numeric error is thrown.
    func guardedBackward(_ dlogp: [Float]) throws {
        // Two trainers of one model share its gradient buffer: refuse to overwrite the other's.
        if let holder = model.gradientHolder, holder !== self {
            throw DPOError.wrongState("the model's gradient buffer holds another trainer's accumulated micro-batches: step that trainer's optimizer (or free it) first; nothing was changed")
        }
        try checkTrained()
        if pendingMicroBatches == 0 {
            try model.zeroGradients()
        } else {
            let g = model.trainableGradients!
            if backup == nil { backup = try FloatBuffer(checkedCount: g.count, for: "the accumulation backup of the gradients") }
            backup!.copy(from: g)
        }
        try model.backward(dlogp: dlogp)
        let g = model.trainableGradients!
        // One parallel pass gives the norm the optimizer needs and the finiteness check (a NaN or
        // infinite entry makes the norm so).
        let norm = globalNorm(g.pointer, count: g.count)
        lastBackwardNorm = norm
        if !norm.isFinite {
            if pendingMicroBatches == 0 { g.zero() } else { g.copy(from: backup!) }
            throw DPOError.numeric("the gradient of this batch is not finite; nothing was changed")
        }
        pendingMicroBatches += 1
    }

    var readyToApply: Bool { pendingMicroBatches >= config.gradientAccumulationSteps }

    func setCommunicator(_ c: Communicator?) throws {
        if pendingMicroBatches > 0 {
            throw DPOError.wrongState("the communicator cannot change while \(pendingMicroBatches) micro-batches wait for the optimizer")
        }
        if let c { try checkRanks(c) }
        communicator = c
    }

    /// Takes back the last guarded backward, whose optimizer step was refused: the gradient buffer
    /// as it was before it, one micro-batch and `tokens` trained tokens fewer.
    func undoLastBackward(tokens: Int) {
        guard pendingMicroBatches > 0, let g = model.trainableGradients else { return }
        pendingMicroBatches -= 1
        numTokens -= tokens
        if pendingMicroBatches == 0 { g.zero() } else if let backup { g.copy(from: backup) }
    }

    /// Clips, steps AdamW with the scheduled rate and clears the accumulation. Returns the
    /// pre-clip gradient norm and the learning rate used. A step that would make the weights or
    /// moments non-finite throws `DPOError.numeric` and changes nothing (gradients included).
    /// `accumulationScale` multiplies the accumulated gradient (norm, clipping and step see the
    /// scaled one; the buffer is not changed): k / r for a step of r < k micro-batches whose
    /// gradients were each divided by k, so the step uses their mean (transformers' last step of
    /// an epoch).
    ///
    /// With a communicator (collective): the ranks' gradient buffers are summed first, and
    /// `knownNorm` is ignored; a refused step then drops the accumulated micro-batches on every rank
    /// (the buffer no longer holds this rank's part).
    func applyOptimizer(knownNorm: Double? = nil, accumulationScale: Double = 1) throws -> (gradNorm: Double, learningRate: Double) {
        guard pendingMicroBatches > 0, let g = model.trainableGradients else {
            throw DPOError.wrongState("apply_optimizer: no gradients have been accumulated")
        }
        try checkTrained()
        guard model.gradientHolder === self else {
            throw DPOError.wrongState("apply_optimizer: the model's gradient buffer holds another trainer's micro-batches, not this trainer's")
        }
        if let c = communicator {
            do {
                try allreduceGradients(c)
                return try step(g, knownNorm: nil, accumulationScale: accumulationScale)
            } catch {
                dropAccumulation()
                throw error
            }
        }
        return try step(g, knownNorm: knownNorm, accumulationScale: accumulationScale)
    }

    private func step(_ g: FloatBuffer, knownNorm: Double?, accumulationScale: Double) throws -> (gradNorm: Double, learningRate: Double) {
        let norm = (knownNorm ?? globalNorm(g.pointer, count: g.count)) * accumulationScale
        if !norm.isFinite {
            throw DPOError.numeric("the gradient norm is \(norm); " + (communicator == nil ? "nothing was changed" : "the accumulated micro-batches are dropped on every rank"))
        }
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1
        // (applied inside the AdamW step, so a refused step leaves the buffer as it was).
        var clip = 1.0
        if config.maxGradNorm > 0 {
            let coef = config.maxGradNorm / (norm + 1e-6)
            if coef < 1 { clip = coef }
        }
        let scale = Float(accumulationScale * clip)
        let lr = config.learningRate(afterSteps: globalStep)
        try adam.step(parameters: model.trainableParameters.pointer, gradients: g.pointer, gradientScale: scale, lr: lr, config: config)
        globalStep += 1
        pendingMicroBatches = 0
        g.zero()
        return (norm, lr)
    }
}
