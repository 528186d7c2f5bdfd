/// One supervised example: the prompt is context only, the completion is learned (all of it, or
/// the tokens `completionMask` marks: a conversation with several assistant turns under
/// `assistant_only_loss`, where the user turns between them are context).
public struct SFTExample: Equatable, Sendable {
    public var promptIds: [Int32]
    public var completionIds: [Int32]
    /// One flag per completion token: true = learned. nil: every completion token is learned.
    public var completionMask: [Bool]?
    public init(promptIds: [Int32], completionIds: [Int32], completionMask: [Bool]? = nil) {
        self.promptIds = promptIds; self.completionIds = completionIds; self.completionMask = completionMask
    }
}

/// TRL's `SFTConfig` fields that matter here (same names, Swift-cased). TRL's SFT default
/// learning rate is 2e-5.
public struct SFTConfig: Equatable, Sendable {
    /// `max_length`: longest prompt+completion sequence, truncated keeping the start (nil = none).
    public var maxLength: Int? = 1024
    /// `bf16`: bf16 mixed precision for the model's matrix products (see `DPOConfig.bf16`; the
    /// trainer sets `LlamaModel.bf16` from it). Default false (exact fp32).
    public var bf16: Bool = false
    public var optimizer: OptimizerConfig = {
        var o = OptimizerConfig()
        o.learningRate = 2e-5
        return o
    }()

    public init() {}

    public func validate() throws {
        try optimizer.validate()
        if let m = maxLength, m < 2 { throw DPOError.invalidArgument("max_length must be >= 2 or unset, got \(m)") }
    }
}

/// Metrics of an SFT step, TRL's names: loss, mean_token_accuracy, entropy, grad_norm,
/// learning_rate, num_tokens.
public struct SFTMetrics: Equatable, Sendable {
    public var loss = 0.0, meanTokenAccuracy = 0.0, entropy = 0.0
    public var gradNorm: Double? = nil, learningRate: Double? = nil
    public var numTokens = 0.0

    public init() {}

    public func named(prefix: String = "") -> [(name: String, value: Double)] {
        var out: [(String, Double)] = [("loss", loss), ("mean_token_accuracy", meanTokenAccuracy), ("entropy", entropy)]
        if let gradNorm { out.append(("grad_norm", gradNorm)) }
        if let learningRate { out.append(("learning_rate", learningRate)) }
        if prefix.isEmpty { out.append(("num_tokens", numTokens)) }
        return out.map { (prefix + $0.0, $0.1) }
    }
}

/// Supervised fine-tuning, the first phase of the pipeline: token-mean cross-entropy on completion
/// tokens only (prompt tokens are context), with the same optimizer, schedule and accumulation as
/// DPO. With accumulation, each micro-batch's token mean is divided by the micro-batch count.
public final class SFTTrainer {
    public let model: LlamaModel
    public internal(set) var config: SFTConfig
    let state: OptimizationState
    var pendingMetrics: [SFTMetrics] = []

    /// `peftConfig`: LoRA (TRL's `peft_config`), a fresh adapter attached to `model` (seeded by the
    /// config's `seed`) and trained alone. Without it, a model that already has an adapter trains
    /// that adapter.
    public init(model: LlamaModel, config: SFTConfig, peftConfig: LoraConfig? = nil) throws {
        try config.validate()
        if let peftConfig {
            if model.adapter != nil {
                throw DPOError.invalidArgument("peft_config: the model already has a LoRA adapter; merge_and_unload it first, or train it without peft_config")
            }
            try model.addAdapter(peftConfig, seed: config.optimizer.seed)
        } else if model.adapter == nil {
            try model.checkFullWeights("SFT without a LoRA adapter (full fine-tuning)")
        }
        self.model = model
        self.config = config
        do { state = try OptimizationState(model: model, config: config.optimizer) } catch {
            if peftConfig != nil { _ = try? model.detachAdapter() }
            throw error
        }
        model.bf16 = config.bf16
    }

    public var globalStep: Int { state.globalStep }
    /// Micro-batches accumulated since the last optimizer step.
    public var pendingMicroBatches: Int { state.pendingMicroBatches }

    /// The ranks this trainer trains with (data parallelism, see `Communicator`), nil for one process.
    public var communicator: Communicator? { state.communicator }

    /// Makes the trainer's calls collective over `communicator`'s ranks (nil: one process again).
    /// Refused while micro-batches are accumulated.
    public func setCommunicator(_ communicator: Communicator?) throws { try state.setCommunicator(communicator) }

    struct Packed {
        let packed: PackedTokens, head: HeadQuery, numTokens: Int
    }

    func pack(_ examples: [SFTExample]) throws -> Packed {
        if examples.isEmpty { throw DPOError.invalidArgument("batch: no examples") }
        try MemoryLimit.checkBatch(tokens: examples.reduce(0) { $0 + $1.promptIds.count + $1.completionIds.count }, "this batch")
        var sequences: [[Int32]] = [], rows: [Int32] = [], labels: [Int32] = []
        var start = 0, numTokens = 0
        let vocab = model.config.vocabSize
        for (i, e) in examples.enumerated() {
            for (name, ids) in [("prompt_ids", e.promptIds), ("completion_ids", e.completionIds)] {
                for (j, t) in ids.enumerated() where t < 0 || Int(t) >= vocab {
                    throw DPOError.invalidArgument("example \(i): \(name)[\(j)] = \(t) is outside the vocabulary [0, \(vocab))")
                }
            }
            if e.completionIds.isEmpty { throw DPOError.invalidArgument("example \(i): completion_ids is empty") }
            if let mask = e.completionMask, mask.count != e.completionIds.count {
                throw DPOError.invalidArgument("example \(i): completion_mask has \(mask.count) flags for \(e.completionIds.count) completion tokens")
            }
            if let m = config.maxLength, e.promptIds.count >= m {
                throw DPOError.invalidArgument("example \(i): the prompt alone has \(e.promptIds.count) tokens, max_length is \(m)")
            }
            let s = MaskedSequence(prompt: e.promptIds, completion: e.completionIds, maxLength: config.maxLength, mode: .keepStart)
            let before = rows.count
            for t in max(s.promptLength, 1)..<max(s.tokens.count, 1) where e.completionMask?[t - s.promptLength] ?? true {
                rows.append(Int32(start + t - 1)); labels.append(s.tokens[t])
            }
            if rows.count == before {
                throw DPOError.invalidArgument("example \(i): no learned completion token has a preceding token to predict it (give a prompt)")
            }
            sequences.append(s.tokens)
            start += s.tokens.count
            numTokens += s.tokens.count
        }
        return Packed(packed: PackedTokens(sequences: sequences), head: HeadQuery(rows: rows, labels: labels), numTokens: numTokens)
    }

    func metrics(_ out: HeadOutputs) -> SFTMetrics {
        var m = SFTMetrics()
        let n = Double(out.logps.count)
        m.loss = -out.logps.reduce(0.0) { $0 + Double($1) } / n
        m.meanTokenAccuracy = out.argmaxHit.reduce(0.0) { $0 + Double($1) } / n
        m.entropy = out.entropy.reduce(0.0) { $0 + Double($1) } / n
        return m
    }

    /// One micro-batch; every `gradient_accumulation_steps`-th call also steps the optimizer
    /// (then the metrics are the micro-batch means with grad_norm and learning_rate).
    /// A batch whose log-probs, loss or gradient is not finite, or whose optimizer step would make
    /// the weights non-finite, throws `DPOError.numeric` and changes nothing.
    public func step(_ examples: [SFTExample]) throws -> (metrics: SFTMetrics, optimizerStepped: Bool) {
        let tokens = state.numTokens
        let m = try accumulate(examples)
        if state.readyToApply && communicator != nil { return (try applyOptimizer(knownNorm: nil), true) }
        if state.readyToApply {
            do { return (try applyOptimizer(knownNorm: state.lastBackwardNorm), true) } catch {
                // The optimizer refused the step: take this call's micro-batch back too.
                state.undoLastBackward(tokens: state.numTokens - tokens)
                pendingMetrics.removeLast()
                throw error
            }
        }
        return (m, false)
    }

    /// Forward and backward of one micro-batch into the accumulated gradient (divided by
    /// `gradient_accumulation_steps`). With a `communicator`: collective, `examples` is this rank's
    /// shard (possibly empty) of the global micro-batch, whose token mean is the loss.
    @discardableResult
    public func accumulate(_ examples: [SFTExample]) throws -> SFTMetrics {
        if let c = communicator { return try accumulateShard(examples, c) }
        let p = try pack(examples)
        let out = try model.forward(p.packed, head: p.head, keepActivations: true)
        do { try out.requireFinite("model") } catch {
            model.pending = nil
            throw error
        }
        var m = metrics(out)
        if !m.loss.isFinite {
            model.pending = nil
            throw DPOError.numeric("the loss of this batch is \(m.loss); nothing was changed")
        }
        // loss = -(1/N) sum logp  =>  d loss / d logp_t = -1 / (N k)
        let k = Float(config.optimizer.gradientAccumulationSteps)
        let d = -1 / (Float(out.logps.count) * k)
        try state.guardedBackward([Float](repeating: d, count: out.logps.count))
        state.numTokens += p.numTokens
        m.numTokens = Double(state.numTokens)
        pendingMetrics.append(m)
        return m
    }

    public func applyOptimizer() throws -> SFTMetrics { try applyOptimizer(knownNorm: nil) }

    func applyOptimizer(knownNorm: Double?, accumulationScale: Double = 1) throws -> SFTMetrics {
        let norm: Double, lr: Double
        do { (norm, lr) = try state.applyOptimizer(knownNorm: knownNorm, accumulationScale: accumulationScale) } catch {
            if communicator != nil && state.pendingMicroBatches == 0 { pendingMetrics = [] }  // dropped on every rank
            throw error
        }
        let k = Double(max(pendingMetrics.count, 1))
        var m = SFTMetrics()
        m.loss = pendingMetrics.reduce(0) { $0 + $1.loss } / k
        m.meanTokenAccuracy = pendingMetrics.reduce(0) { $0 + $1.meanTokenAccuracy } / k
        m.entropy = pendingMetrics.reduce(0) { $0 + $1.entropy } / k
        m.numTokens = Double(state.numTokens)
        m.gradNorm = norm
        m.learningRate = lr
        pendingMetrics = []
        return m
    }

    /// Metrics without an update (non-finite log-probs throw `DPOError.numeric`). With a
    /// `communicator`: collective, the global batch's metrics.
    public func evaluate(_ examples: [SFTExample]) throws -> SFTMetrics {
        if let c = communicator { return try evaluateShard(examples, c) }
        let p = try pack(examples)
        let out = try model.forward(p.packed, head: p.head, keepActivations: false)
        try out.requireFinite("model")
        var m = metrics(out)
        m.numTokens = Double(state.numTokens)
        return m
    }

    public func saveCheckpoint(directory: String) throws { try saveCheckpoint(directory: directory, extraState: [:]) }

    /// `saveCheckpoint`, with `extraState`'s keys added to trainer_state.json (the training loop's
    /// state; a key the trainer writes itself is an error).
    public func saveCheckpoint(directory: String, extraState: JSONObject) throws {
        try writeCheckpointDirectory(directory, isCheckpoint: isTrainerCheckpoint) { dir in
            var s = newCheckpointState(kind: "sft")
            try state.writeFiles(into: dir, state: &s)
            s["config"] = .object(config.jsonObject)
            s["pending_metrics"] = .array(pendingMetrics.map { m in
                .object(["loss": .number(m.loss), "mean_token_accuracy": .number(m.meanTokenAccuracy), "entropy": .number(m.entropy)])
            })
            try merge(extraState, into: &s)
            try writeFileAtomically(joinPath(dir, "trainer_state.json"), bytes: Array((JSON.serialize(.object(s)) + "\n").utf8))
        }
    }

    /// Restores a checkpoint written by `saveCheckpoint`; returns its trainer_state.json (with any
    /// extra state the training loop wrote).
    @discardableResult
    public func loadCheckpoint(directory: String) throws -> JSONObject {
        try readCheckpointDirectory(directory) { try restore(directory) }
    }

    private func restore(_ directory: String) throws -> JSONObject {
        let s = try readCheckpointState(directory, kind: "sft")
        var restored = SFTConfig()
        for (key, value) in (s["config"]?.object).map({ o in o.keys.map { ($0, o[$0]!) } }) ?? [] {
            if try !restored.set(key, value) { throw DPOError.format("checkpoint '\(directory)': unknown SFT config field '\(key)'") }
        }
        try restored.validate()
        try state.readFiles(from: directory, state: s)
        config = restored
        state.config = restored.optimizer
        model.bf16 = restored.bf16
        pendingMetrics = (s["pending_metrics"]?.array ?? []).compactMap { v in
            v.object.map { o in
                var m = SFTMetrics()
                m.loss = o["loss"]?.double ?? 0; m.meanTokenAccuracy = o["mean_token_accuracy"]?.double ?? 0
                m.entropy = o["entropy"]?.double ?? 0
                return m
            }
        }
        return s
    }
}
