/// Where the reference log-probs come from.
public enum ReferenceKind: String, Sendable {
    /// A separate frozen model.
    case model
    /// A copy of the policy's weights taken when training starts (no reference given).
    case snapshot
    /// Every batch carries `ref_chosen_logps` / `ref_rejected_logps`; no reference model is held.
    case precomputed
    /// LoRA with a fresh adapter: the policy itself with its adapter switched off (no weight copy).
    case adaptersDisabled = "adapters_disabled"
    /// LoRA continuing a loaded adapter: the policy with a frozen copy of the adapter's initial
    /// weights in place of the trained one (TRL's "ref" adapter).
    case referenceAdapter = "reference_adapter"
}

/// How a LoRA trainer without a reference model computes reference log-probs.
enum LoraReference {
    /// The base model: adapters off.
    case adaptersDisabled
    /// The frozen copy of the adapter's initial weights.
    case adapter(LoraAdapter)
}

/// Result of `DPOTrainer.step`: the metrics, and whether the call completed an optimizer step
/// (with gradient accumulation, only every `gradient_accumulation_steps`-th call does).
public struct DPOStepResult: Sendable {
    public var metrics: DPOMetrics
    public var optimizerStepped: Bool
    /// Optimizer steps taken so far.
    public var globalStep: Int
}

/// DPO training of a policy against a reference (TRL's `DPOTrainer`, dpo-math.md).
///
/// Not thread-safe: one trainer is used by one thread at a time.
public final class DPOTrainer {
    public let policy: LlamaModel
    public internal(set) var config: DPOConfig
    /// The reference model (a separate one, or the snapshot once taken); nil when precomputed.
    public internal(set) var reference: LlamaModel?
    public let referenceKind: ReferenceKind
    let state: OptimizationState
    /// How batches are laid out (results are the same; `.plain` does a padded TRL batch's work).
    public var packing: PreferencePacking = .sharedPrompt
    /// Metrics of the micro-batches accumulated towards the next optimizer step.
    var pendingMetrics: [DPOMetrics] = []
    /// With a LoRA policy and no reference model: how reference log-probs are computed (also
    /// for `precomputeReferenceLogProbs`).
    let loraReference: LoraReference?

    /// - Parameters:
    ///   - policy: the model to train (its gradient buffer is used).
    ///   - reference: a frozen reference with the same vocabulary; nil to use a snapshot of the
    ///     policy's initial weights, or no model at all when `precompute_ref_log_probs` is set.
    ///   - peftConfig: LoRA (TRL's `peft_config`): a fresh adapter is attached to `policy`
    ///     (seeded by the config's `seed`) and trained alone; without a reference model the reference
    ///     is the policy with the adapter switched off. Without `peftConfig`, a policy that already
    ///     has an adapter (loaded or attached) trains that adapter, and without a reference model the
    ///     reference is a frozen copy of the adapter as it is now (TRL's "ref" adapter).
    public init(policy: LlamaModel, reference: LlamaModel? = nil, config: DPOConfig,
                peftConfig: LoraConfig? = nil) throws {
        try config.validate()
        if let peftConfig {
            if policy.adapter != nil {
                throw DPOError.invalidArgument("peft_config: the policy already has a LoRA adapter; merge_and_unload it first, or train it without peft_config")
            }
            if config.syncRefModel {
                throw DPOError.invalidArgument("sync_ref_model cannot be used with LoRA (peft_config)")
            }
            try peftConfig.validate()
        } else if policy.adapter != nil && config.syncRefModel {
            throw DPOError.invalidArgument("sync_ref_model cannot be used with a LoRA adapter")
        }
        if peftConfig == nil && policy.adapter == nil {
            try policy.checkFullWeights("DPO without a LoRA adapter (full fine-tuning)")
        }
        if let reference {
            if config.syncRefModel { try reference.checkFullWeights("sync_ref_model's reference") }
            if reference === policy {
                throw DPOError.invalidArgument("reference: the reference must be a different model object than the policy (pass nil for a snapshot)")
            }
            if reference.config.vocabSize != policy.config.vocabSize {
                throw DPOError.invalidArgument("reference: vocab_size \(reference.config.vocabSize) differs from the policy's \(policy.config.vocabSize)")
            }
            if config.syncRefModel && reference.config.normalized != policy.config.normalized {
                throw DPOError.invalidArgument("sync_ref_model needs a reference with the policy's exact config")
            }
        }
        var loraReference: LoraReference? = nil
        if let peftConfig {
            if reference == nil { loraReference = .adaptersDisabled }
            // Attached last, after every check, so a refused trainer leaves the policy as it was.
            try policy.addAdapter(peftConfig, seed: config.optimizer.seed)
        } else if let a = policy.adapter, reference == nil {
            loraReference = .adapter(try a.copy())
        }
        self.policy = policy
        self.config = config
        self.reference = reference
        self.loraReference = loraReference
        switch (config.precomputeRefLogProbs, reference, loraReference) {
        case (true, _, _): referenceKind = .precomputed
        case (false, .some, _): referenceKind = .model
        case (false, nil, .adaptersDisabled?): referenceKind = .adaptersDisabled
        case (false, nil, .adapter?): referenceKind = .referenceAdapter
        case (false, nil, nil): referenceKind = .snapshot
        }
        do { state = try OptimizationState(model: policy, config: config.optimizer) } catch {
            if peftConfig != nil { _ = try? policy.detachAdapter() }
            throw error
        }
        applyPrecision()
    }

    /// Sets `LlamaModel.bf16` of the policy and the reference from `config.bf16`: as TRL's
    /// `bf16=True` autocasts the reference's forward too (a snapshot taken later copies the
    /// policy's setting).
    func applyPrecision() {
        policy.bf16 = config.bf16
        reference?.bf16 = config.bf16
    }

    /// Optimizer steps taken.
    public var globalStep: Int { state.globalStep }
    /// Micro-batches accumulated since the last optimizer step.
    public var pendingMicroBatches: Int { state.pendingMicroBatches }

    /// The ranks this trainer trains with (data parallelism, see `Communicator`), nil for one process.
    public var communicator: Communicator? { state.communicator }

    /// Makes the trainer's calls collective over `communicator`'s ranks (nil: one process again).
    /// Refused while micro-batches are accumulated.
    public func setCommunicator(_ communicator: Communicator?) throws { try state.setCommunicator(communicator) }

    // MARK: - Training

    /// One micro-batch: forward of policy and reference, loss, backward into the accumulated
    /// gradient; every `gradient_accumulation_steps`-th call also clips and steps AdamW.
    /// A batch whose log-probs, loss or gradient is not finite, or whose optimizer step would make
    /// the weights non-finite, throws `DPOError.numeric` and changes nothing.
    public func step(_ pairs: [PreferencePair]) throws -> DPOStepResult {
        try undoingSnapshot {
            let tokens = state.numTokens
            let metrics = try accumulate(pairs)
            if state.readyToApply && communicator != nil {
                return DPOStepResult(metrics: try applyOptimizer(knownNorm: nil), optimizerStepped: true, globalStep: globalStep)
            }
            if state.readyToApply {
                do {
                    // The norm of the buffer this call's backward just left is still exact.
                    return DPOStepResult(metrics: try applyOptimizer(knownNorm: state.lastBackwardNorm),
                                         optimizerStepped: true, globalStep: globalStep)
                } catch {
                    // The optimizer refused the step: take this call's micro-batch back too.
                    state.undoLastBackward(tokens: state.numTokens - tokens)
                    pendingMetrics.removeLast()
                    throw error
                }
            }
            return DPOStepResult(metrics: metrics, optimizerStepped: false, globalStep: globalStep)
        }
    }

    /// Runs `body`; if it throws, a snapshot reference taken meanwhile is dropped again, so the
    /// failed call changes nothing (the next call takes the same snapshot: the policy's weights
    /// are unchanged by a failed call).
    func undoingSnapshot<T>(_ body: () throws -> T) throws -> T {
        let hadReference = reference != nil
        do { return try body() } catch {
            if !hadReference { reference = nil }
            throw error
        }
    }

    /// The distributed grain: forward and backward of one micro-batch, gradients (already divided
    /// by `gradient_accumulation_steps`) added to `policy.gradients`. Returns the micro-batch's metrics.
    /// With a `communicator`: collective, `pairs` is this rank's shard (possibly empty) of the global
    /// micro-batch; the metrics are the global batch's and the buffer gets this rank's part of its
    /// gradient (see DataParallel.swift).
    @discardableResult
    public func accumulate(_ pairs: [PreferencePair]) throws -> DPOMetrics {
        try undoingSnapshot { try accumulateBatch(pairs) }
    }

    func accumulateBatch(_ pairs: [PreferencePair]) throws -> DPOMetrics {
        if let c = communicator { return try accumulateShard(pairs, c) }
        let batch = try pack(pairs)
        let (refChosen, refRejected) = try referenceSums(pairs, batch)
        let out = try policy.forward(batch.packed, head: batch.head, keepActivations: true)
        do { try out.requireFinite("policy") } catch {
            policy.pending = nil
            throw error
        }
        let stats = PairStatistics(out, batch: batch, ldAlpha: config.ldAlpha)
        let input = lossInput(stats, batch, refChosen, refRejected)
        let result = dpoLoss(input, config: config)
        if !result.loss.isFinite {
            policy.pending = nil
            throw DPOError.numeric("the loss of this batch is \(result.loss); nothing was changed")
        }
        // d loss / d logp of each head row, divided by the accumulation count (transformers scales
        // each micro-batch's loss by 1/k before backward).
        let k = Double(config.optimizer.gradientAccumulationSteps)
        var dlogp = [Float](repeating: 0, count: batch.owners.count)
        for (r, o) in batch.owners.enumerated() where o.pair >= 0 {
            let i = Int(o.pair)
            let d = o.chosen ? result.dChosen[i] * stats.rowFactor[r] + result.dChosenToken
                             : result.dRejected[i] * stats.rowFactor[r]
            dlogp[r] = Float(d / k)
        }
        try state.guardedBackward(dlogp)
        state.numTokens += batch.numTokens
        var metrics = DPOMetrics(loss: result.loss, beta: config.beta, policy: stats,
                                 refChosen: refChosen, refRejected: refRejected)
        metrics.numTokens = Double(state.numTokens)
        pendingMetrics.append(metrics)
        return metrics
    }

    /// The distributed grain: clip, step AdamW at the scheduled rate, sync the reference for
    /// TR-DPO, clear the accumulation. Returns the mean metrics of the accumulated micro-batches
    /// with `grad_norm` and `learning_rate`. With a `communicator`: collective, the ranks' gradient
    /// buffers are summed first.
    public func applyOptimizer() throws -> DPOMetrics { try applyOptimizer(knownNorm: nil) }

    func applyOptimizer(knownNorm: Double?, accumulationScale: Double = 1) throws -> DPOMetrics {
        let norm: Double, lr: Double
        do { (norm, lr) = try state.applyOptimizer(knownNorm: knownNorm, accumulationScale: accumulationScale) } catch {
            if communicator != nil && state.pendingMicroBatches == 0 { pendingMetrics = [] }  // dropped on every rank
            throw error
        }
        var metrics = DPOMetrics.mean(pendingMetrics)
        pendingMetrics = []
        metrics.gradNorm = norm
        metrics.learningRate = lr
        if config.syncRefModel, state.globalStep % config.refModelSyncSteps == 0, let ref = reference {
            // TR-DPO: ref <- (1 - alpha) ref + alpha policy (TRL's SyncRefModelCallback).
            let a = Float(config.refModelMixupAlpha)
            let r = ref.parameters.pointer, p = policy.parameters.pointer
            parallelFor(ref.parameters.count, grain: 65536) { range in
                for i in range { r[i] = (1 - a) * r[i] + a * p[i] }
            }
        }
        return metrics
    }

    /// Metrics of a batch without any update or change of state (TRL's `evaluate`, `eval_` names).
    /// Non-finite log-probs or loss throw `DPOError.numeric`. With a `communicator`: collective, the
    /// global batch's metrics.
    public func evaluate(_ pairs: [PreferencePair]) throws -> DPOMetrics {
        try undoingSnapshot { try evaluateBatch(pairs) }
    }

    func evaluateBatch(_ pairs: [PreferencePair]) throws -> DPOMetrics {
        if let c = communicator { return try evaluateShard(pairs, c) }
        let batch = try pack(pairs)
        let (refChosen, refRejected) = try referenceSums(pairs, batch)
        let out = try policy.forward(batch.packed, head: batch.head, keepActivations: false)
        try out.requireFinite("policy")
        let stats = PairStatistics(out, batch: batch, ldAlpha: config.ldAlpha)
        let result = dpoLoss(lossInput(stats, batch, refChosen, refRejected), config: config)
        if !result.loss.isFinite { throw DPOError.numeric("the loss of this batch is \(result.loss)") }
        var metrics = DPOMetrics(loss: result.loss, beta: config.beta, policy: stats,
                                 refChosen: refChosen, refRejected: refRejected)
        metrics.numTokens = Double(state.numTokens)
        return metrics
    }

    /// Reference log-prob sums (LD-weighted like the loss uses them) of each pair, computed with
    /// the reference model, or with the policy's current weights when there is none. Attach them
    /// to the pairs (`refChosenLogps`, `refRejectedLogps`) to train without a reference forward.
    public func precomputeReferenceLogProbs(_ pairs: [PreferencePair]) throws -> [(chosen: Double, rejected: Double)] {
        try undoingSnapshot { try referenceLogProbs(pairs) }
    }

    func referenceLogProbs(_ pairs: [PreferencePair]) throws -> [(chosen: Double, rejected: Double)] {
        let batch = try pack(pairs.map {
            PreferencePair(promptIds: $0.promptIds, chosenIds: $0.chosenIds, rejectedIds: $0.rejectedIds)
        })
        let out: HeadOutputs
        if reference == nil, let lr = loraReference {
            out = try loraReferenceForward(lr, batch)
        } else {
            let model = try referenceModel(allowPolicy: true)
            out = try model.forward(batch.packed, head: batch.head, keepActivations: false)
            try out.requireFinite(model === policy ? "policy" : "reference model")
        }
        let stats = PairStatistics(out, batch: batch, ldAlpha: config.ldAlpha)
        return (0..<batch.pairs).map { (stats.chosen[$0], stats.rejected[$0]) }
    }

    // MARK: - Pieces

    func pack(_ pairs: [PreferencePair]) throws -> PackedPreferenceBatch {
        try PackedPreferenceBatch(pairs: pairs, vocabSize: policy.config.vocabSize,
                                  maxLength: config.maxLength, truncation: config.truncationMode, packing: packing)
    }

    /// The model that computes reference log-probs: the reference, or the snapshot (taken now if
    /// this is the first use). With precomputed log-probs there is none, unless `allowPolicy`.
    func referenceModel(allowPolicy: Bool = false) throws -> LlamaModel {
        if let reference { return reference }
        switch referenceKind {
        case .model:
            throw DPOError.internal("reference model missing")
        case .snapshot:
            let snap = try LlamaModel(config: policy.config)
            snap.parameters.copy(from: policy.parameters)
            snap.bf16 = policy.bf16  // the reference computes as the policy does
            reference = snap
            return snap
        case .precomputed:
            if allowPolicy { return policy }
            throw DPOError.invalidArgument("precompute_ref_log_probs is set, so every pair needs ref_chosen_logps and ref_rejected_logps")
        case .adaptersDisabled, .referenceAdapter:
            throw DPOError.internal("a LoRA reference is the policy itself (loraReferenceForward)")
        }
    }

    /// The reference forward of a LoRA trainer: the policy with its adapter off, or with the
    /// frozen reference adapter in place of the trained one (it runs in the policy's workspace,
    /// before the policy's own forward).
    func loraReferenceForward(_ lr: LoraReference, _ batch: PackedPreferenceBatch) throws -> HeadOutputs {
        let out: HeadOutputs
        switch lr {
        case .adaptersDisabled:
            out = try policy.withAdaptersDisabled {
                try policy.forward(batch.packed, head: batch.head, keepActivations: false)
            }
        case .adapter(let a):
            out = try policy.withAdapter(a) {
                try policy.forward(batch.packed, head: batch.head, keepActivations: false)
            }
        }
        try out.requireFinite("reference (LoRA policy with the reference adapter state)")
        return out
    }

    /// Reference sums from the batch (when every pair carries them) or from a reference forward.
    func referenceSums(_ pairs: [PreferencePair], _ batch: PackedPreferenceBatch) throws -> ([Double], [Double]) {
        let carried = pairs.filter { $0.refChosenLogps != nil || $0.refRejectedLogps != nil }.count
        if carried == pairs.count {
            if config.syncRefModel {
                throw DPOError.invalidArgument("precomputed reference log-probs cannot be used with sync_ref_model (they would go stale)")
            }
            var c: [Double] = [], r: [Double] = []
            for (i, p) in pairs.enumerated() {
                guard let rc = p.refChosenLogps, let rr = p.refRejectedLogps else {
                    throw DPOError.invalidArgument("pair \(i): ref_chosen_logps and ref_rejected_logps must be given together")
                }
                if !rc.isFinite || !rr.isFinite || rc > 0 || rr > 0 {
                    throw DPOError.invalidArgument("pair \(i): precomputed reference log-probs must be finite and <= 0, got \(rc) and \(rr)")
                }
                c.append(rc); r.append(rr)
            }
            return (c, r)
        }
        if carried > 0 {
            throw DPOError.invalidArgument("\(carried) of \(pairs.count) pairs carry precomputed reference log-probs: give them for all pairs or none")
        }
        let out: HeadOutputs
        if reference == nil, let lr = loraReference {
            out = try loraReferenceForward(lr, batch)
        } else {
            let ref = try referenceModel()
            // The policy has no backward pending here: the reference runs in its workspace.
            out = try ref.forward(batch.packed, head: batch.head, keepActivations: false, workspaceOf: policy)
            try out.requireFinite("reference model")
        }
        let stats = PairStatistics(out, batch: batch, ldAlpha: config.ldAlpha)
        return (stats.chosen, stats.rejected)
    }

    func lossInput(_ s: PairStatistics, _ b: PackedPreferenceBatch, _ refChosen: [Double], _ refRejected: [Double]) -> DPOLossInput {
        DPOLossInput(policyChosen: s.chosen, policyRejected: s.rejected, refChosen: refChosen, refRejected: refRejected,
                     chosenTokens: b.chosenMasked.map { Double(max($0, 1)) },
                     rejectedTokens: b.rejectedMasked.map { Double(max($0, 1)) },
                     pairWeights: config.useWeighting ? s.pairWeights : nil,
                     chosenTokenLogpSum: s.chosenTokenLogpSum, chosenTokenCount: s.chosenTokenCount)
    }
}
