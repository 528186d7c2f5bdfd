/// Trainer checkpoints: one directory, written all-or-nothing even under kill -9 (built beside
/// the target, then renamed into place; see CheckpointDirectory.swift), holding everything an
/// exact resume needs:
///
///     model/                   the policy as a Hugging Face directory (config.json + model.safetensors)
///     adapter/                 instead of model/ for LoRA: the trained adapter (PEFT's files)
///     reference/               the reference weights (separate model, snapshot or TR-DPO mix), if any
///     reference_adapter/       LoRA: the frozen reference adapter (TRL's "ref"), if any
///     optimizer.safetensors    AdamW moments `exp_avg`, `exp_avg_sq` and, mid-accumulation, `gradients`
///                              (of the trained tensors: the adapter's alone for LoRA)
///     trainer_state.json       step counters, accumulation state, RNG, config, pending metrics
///     manifest.json            size and CRC-32 of every other file, written last
///
/// A load verifies the manifest and that every value is finite, and reads and checks everything
/// before it changes the trainer: a load that fails leaves the trainer as it was.
/// Resuming from step k and training to n gives bit-identical weights to an uninterrupted run.
enum CheckpointFormat {
    static let name = "swift-dpo-trainer-checkpoint"
    static let version = 1
}

extension OptimizationState {
    func writeFiles(into dir: String, state: inout JSONObject) throws {
        if communicator != nil && pendingMicroBatches > 0 {
            throw DPOError.wrongState("a data-parallel checkpoint is written between optimizer steps: this rank's \(pendingMicroBatches) accumulated micro-batches are only its part of the gradient")
        }
        if let adapter {
            try adapter.save(directory: joinPath(dir, "adapter"))
            state["lora"] = .bool(true)
            state["lora_dropout_calls"] = .string(String(adapter.dropoutCalls, radix: 16))
            state["lora_dropout_seed"] = .string(String(adapter.dropoutSeed, radix: 16))
        } else {
            try model.save(directory: joinPath(dir, "model"))
        }
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = [
            ("exp_avg", [adam.m.count], UnsafeBufferPointer(adam.m.buffer)),
            ("exp_avg_sq", [adam.v.count], UnsafeBufferPointer(adam.v.buffer)),
        ]
        if pendingMicroBatches > 0, let g = model.trainableGradients {
            tensors.append(("gradients", [g.count], UnsafeBufferPointer(g.buffer)))
        }
        try SafetensorsWriter.write(joinPath(dir, "optimizer.safetensors"), tensors: tensors, metadata: [:])
        state["global_step"] = .number(Double(globalStep))
        state["adam_steps"] = .number(Double(adam.steps))
        state["pending_micro_batches"] = .number(Double(pendingMicroBatches))
        state["num_tokens"] = .number(Double(numTokens))
        let s = rng.state
        state["rng_state"] = .array([s.0, s.1, s.2, s.3].map { .string(String($0, radix: 16)) })
    }

    func readFiles(from dir: String, state: JSONObject) throws {
        try checkTrained()
        let isLora = state["lora"]?.bool ?? false
        if isLora != (adapter != nil) {
            throw DPOError.invalidArgument(isLora ? "checkpoint '\(dir)' is of a LoRA run, this trainer trains the whole model"
                                                  : "checkpoint '\(dir)' is of a full fine-tuning run, this trainer trains a LoRA adapter")
        }
        // The trained weights: the whole model, or the adapter (the base is the caller's).
        let loadedWeights: FloatBuffer
        var dropout: (calls: UInt64, seed: UInt64)? = nil
        if let adapter {
            let loaded = try LoraAdapter.load(directory: joinPath(dir, "adapter"), model: model.config)
            // What the training depends on; the initialisation and the base's name do not matter
            // (nil target_modules is PEFT's default, the files name the modules).
            let a = loaded.config, b = adapter.config
            guard a.r == b.r, a.loraAlpha == b.loraAlpha, a.loraDropout == b.loraDropout, a.modules == b.modules,
                  a.useRslora == b.useRslora else {
                throw DPOError.invalidArgument("checkpoint '\(dir)': its LoRA config differs from the trainer's adapter")
            }
            guard let calls = state["lora_dropout_calls"]?.string.flatMap({ UInt64($0, radix: 16) }),
                  let seed = state["lora_dropout_seed"]?.string.flatMap({ UInt64($0, radix: 16) }) else {
                throw DPOError.format("checkpoint '\(dir)': trainer_state.json lacks lora_dropout_calls / lora_dropout_seed")
            }
            dropout = (calls, seed)
            loadedWeights = loaded.parameters
        } else {
            let loaded = try LlamaModel.load(directory: joinPath(dir, "model"))
            guard loaded.config.normalized == model.config.normalized else {
                throw DPOError.invalidArgument("checkpoint '\(dir)': its model config differs from the trainer's model")
            }
            try checkFinite(loaded.parameters.buffer, "the model weights", dir)
            loadedWeights = loaded.parameters
        }
        let trainedCount = model.trainableParameters.count
        let opt = try SafetensorsFile.open(joinPath(dir, "optimizer.safetensors"))
        // Counters in [0, 2^50]: far beyond any run, and far from overflow when training goes on.
        func int(_ key: String) throws -> Int {
            guard let v = state[key]?.int, v >= 0, v <= 1 << 50 else {
                throw DPOError.format("checkpoint '\(dir)': trainer_state.json: '\(key)' missing or outside [0, 2^50]")
            }
            return v
        }
        let global = try int("global_step"), adamSteps = try int("adam_steps"), tokens = try int("num_tokens")
        let pending = try int("pending_micro_batches")
        if communicator != nil && pending > 0 {
            throw DPOError.invalidArgument("checkpoint '\(dir)' holds \(pending) accumulated micro-batches: data-parallel training resumes only from a checkpoint written between optimizer steps")
        }
        let words = try (state["rng_state"]?.array ?? []).map { v -> UInt64 in
            guard let s = v.string, let w = UInt64(s, radix: 16) else { throw DPOError.format("checkpoint '\(dir)': bad rng_state") }
            return w
        }
        guard words.count == 4 else { throw DPOError.format("checkpoint '\(dir)': rng_state must have 4 words") }
        // The sizes from the header first: a tensor is read only once it has the model's size.
        for (name, needed) in [("exp_avg", true), ("exp_avg_sq", true), ("gradients", pending > 0)] where needed {
            guard let info = opt.info(name) else { throw DPOError.format("checkpoint '\(dir)': optimizer.safetensors has no '\(name)'") }
            guard info.count == trainedCount else {
                throw DPOError.format("checkpoint '\(dir)': optimizer tensor '\(name)' has \(info.count) entries, the trained tensors \(trainedCount)")
            }
        }
        // The model's gradient buffer is shared by its trainers: refuse to take it from another.
        if let holder = model.gradientHolder, holder !== self {
            throw DPOError.wrongState("checkpoint '\(dir)': the model's gradient buffer holds another trainer's accumulated micro-batches; step that trainer's optimizer (or free it) first")
        }
        if model.trainableGradients == nil { try model.zeroGradients() }
        // Read everything before changing anything, so a bad checkpoint leaves the trainer as it was.
        let m = try opt.floats("exp_avg"), v = try opt.floats("exp_avg_sq")
        guard m.count == adam.m.count, v.count == adam.v.count else {
            throw DPOError.format("checkpoint '\(dir)': optimizer moments have \(m.count) entries, the model has \(adam.m.count)")
        }
        let grads = pending > 0 ? try opt.floats("gradients") : nil
        if let grads, grads.count != trainedCount {
            throw DPOError.format("checkpoint '\(dir)': gradients have \(grads.count) entries, the trained tensors \(trainedCount)")
        }
        try m.withUnsafeBufferPointer { try checkFinite($0, "the optimizer's exp_avg", dir) }
        try v.withUnsafeBufferPointer { try checkFinite($0, "the optimizer's exp_avg_sq", dir) }
        if let i = v.firstIndex(where: { $0 < 0 }) {
            throw DPOError.format("checkpoint '\(dir)': the optimizer's exp_avg_sq is negative at index \(i)")
        }
        try grads?.withUnsafeBufferPointer { try checkFinite($0, "the accumulated gradients", dir) }
        // Nothing below throws: the trainer changes only once everything has been checked.
        globalStep = global
        adam.steps = adamSteps
        numTokens = tokens
        pendingMicroBatches = pending
        rng.state = (words[0], words[1], words[2], words[3])
        model.trainableParameters.copy(from: loadedWeights)
        if let adapter, let dropout { adapter.dropoutCalls = dropout.calls; adapter.dropoutSeed = dropout.seed }
        _ = m.withUnsafeBufferPointer { adam.m.buffer.update(fromContentsOf: $0) }
        _ = v.withUnsafeBufferPointer { adam.v.buffer.update(fromContentsOf: $0) }
        let g = model.trainableGradients!  // allocated above, before anything changed
        g.zero()
        if let grads { _ = grads.withUnsafeBufferPointer { g.buffer.update(fromContentsOf: $0) } }
        model.releaseWorkspace()
    }
}

/// Throws a format error naming the first NaN or infinite value of `values`.
func checkFinite<C: Collection>(_ values: C, _ what: String, _ dir: String) throws where C.Element == Float {
    if let i = values.firstIndex(where: { !$0.isFinite }) {
        throw DPOError.format("checkpoint '\(dir)': \(what) contain a NaN or infinite value (at index \(values.distance(from: values.startIndex, to: i)))")
    }
}

/// Whether `dir` holds a swift-dpo trainer checkpoint (of any trainer or version): the test a
/// save applies before it replaces a directory.
func isTrainerCheckpoint(_ dir: String) -> Bool {
    guard let bytes = try? readFile(joinPath(dir, "trainer_state.json")),
          let state = try? JSON.parse(bytes).object else { return false }
    return state["format"]?.string == CheckpointFormat.name
}

/// The files every checkpoint's manifest must list (a LoRA run's has the adapter instead of the model).
let checkpointRequiredFiles = ["trainer_state.json", "optimizer.safetensors", "model/config.json", "model/model.safetensors"]
let loraCheckpointRequiredFiles = ["trainer_state.json", "optimizer.safetensors",
                                   "adapter/" + LoraFiles.configName, "adapter/" + LoraFiles.weightsName]

/// Reads and checks `trainer_state.json` of checkpoint `dir`, then verifies the manifest.
func readCheckpointState(_ dir: String, kind: String) throws -> JSONObject {
    let path = joinPath(dir, "trainer_state.json")
    guard fileExists(path) else { throw DPOError.io("no trainer_state.json in checkpoint '\(dir)'") }
    guard let state = try JSON.parse(try readFile(path)).object,
          state["format"]?.string == CheckpointFormat.name else {
        throw DPOError.format("'\(path)' is not a swift-dpo trainer checkpoint")
    }
    guard state["version"]?.int == CheckpointFormat.version else {
        throw DPOError.format("'\(path)': unsupported checkpoint version \(state["version"].map { JSON.serialize($0) } ?? "none")")
    }
    guard state["trainer"]?.string == kind else {
        throw DPOError.invalidArgument("checkpoint '\(dir)' was written by a \(state["trainer"]?.string ?? "?") trainer, not \(kind)")
    }
    try verifyManifest(dir, required: state["lora"]?.bool == true ? loraCheckpointRequiredFiles : checkpointRequiredFiles)
    return state
}

/// Adds `extra`'s keys to a checkpoint's state; refuses one the trainer already wrote.
func merge(_ extra: JSONObject, into state: inout JSONObject) throws {
    for key in extra.keys {
        if state[key] != nil { throw DPOError.internal("checkpoint state key '\(key)' is written by the trainer") }
        state[key] = extra[key]
    }
}

func newCheckpointState(kind: String) -> JSONObject {
    var s = JSONObject()
    s["format"] = .string(CheckpointFormat.name)
    s["version"] = .number(Double(CheckpointFormat.version))
    s["trainer"] = .string(kind)
    return s
}

extension DPOMetrics {
    var jsonObject: JSONObject {
        var o = JSONObject()
        for (name, value) in named() { o[name] = .number(value) }
        return o
    }

    init(json o: JSONObject) {
        self.init()
        func v(_ k: String) -> Double { o[k]?.double ?? 0 }
        loss = v("loss"); rewardsChosen = v("rewards/chosen"); rewardsRejected = v("rewards/rejected")
        rewardsAccuracies = v("rewards/accuracies"); rewardsMargins = v("rewards/margins")
        logpsChosen = v("logps/chosen"); logpsRejected = v("logps/rejected")
        logitsChosen = v("logits/chosen"); logitsRejected = v("logits/rejected")
        entropy = v("entropy"); meanTokenAccuracy = v("mean_token_accuracy"); numTokens = v("num_tokens")
    }
}

extension DPOTrainer {
    /// Writes a checkpoint directory, all-or-nothing. An existing directory at the path is
    /// replaced only if it is empty or a swift-dpo checkpoint; anything else is refused.
    public func saveCheckpoint(directory: String) throws { try saveCheckpoint(directory: directory, extraState: [:]) }

    /// `saveCheckpoint`, with `extraState`'s keys added to trainer_state.json (the training loop's
    /// state; a key the trainer writes itself is an error).
    public func saveCheckpoint(directory: String, extraState: JSONObject) throws {
        try writeCheckpointDirectory(directory, isCheckpoint: isTrainerCheckpoint) { dir in
            var state = newCheckpointState(kind: "dpo")
            try self.state.writeFiles(into: dir, state: &state)
            state["config"] = .object(config.jsonObject)
            state["reference_kind"] = .string(referenceKind.rawValue)
            state["pending_metrics"] = .array(pendingMetrics.map { .object($0.jsonObject) })
            // A reference kept quantized is not written: it cannot change (sync_ref_model is
            // refused for it), and loading the checkpoint keeps the trainer's own.
            if let reference, reference.quantizedBase == nil { try reference.save(directory: joinPath(dir, "reference")) }
            if case .adapter(let a)? = loraReference { try a.save(directory: joinPath(dir, "reference_adapter")) }
            try merge(extraState, into: &state)
            try writeFileAtomically(joinPath(dir, "trainer_state.json"), bytes: Array((JSON.serialize(.object(state)) + "\n").utf8))
        }
    }

    /// Restores a checkpoint written by `saveCheckpoint` into this trainer: policy weights,
    /// reference, optimizer moments, accumulated gradients, counters, RNG and config. The trainer
    /// must have been created with the same model config and reference kind. Returns the
    /// checkpoint's trainer_state.json (with any extra state the training loop wrote).
    @discardableResult
    public func loadCheckpoint(directory: String) throws -> JSONObject {
        try readCheckpointDirectory(directory) { try restore(directory) }
    }

    private func restore(_ directory: String) throws -> JSONObject {
        let state = try readCheckpointState(directory, kind: "dpo")
        guard let configJSON = state["config"]?.object else { throw DPOError.format("checkpoint '\(directory)': no config") }
        let restoredConfig = try DPOConfig(json: configJSON)
        guard state["reference_kind"]?.string == referenceKind.rawValue else {
            throw DPOError.invalidArgument("checkpoint '\(directory)' uses reference kind \(state["reference_kind"]?.string ?? "?"), this trainer \(referenceKind.rawValue)")
        }
        let refDir = joinPath(directory, "reference")
        let restoredReference = isDirectory(refDir) ? try LlamaModel.load(directory: refDir) : nil
        if let r = restoredReference, r.config.vocabSize != policy.config.vocabSize {
            throw DPOError.format("checkpoint '\(directory)': reference vocabulary differs from the policy's")
        }
        if let r = restoredReference { try checkFinite(r.parameters.buffer, "the reference weights", directory) }
        var restoredAdapter: LoraAdapter? = nil
        if case .adapter(let current)? = loraReference {
            let a = try LoraAdapter.load(directory: joinPath(directory, "reference_adapter"), model: policy.config)
            guard a.parameters.count == current.parameters.count, a.tensors == current.tensors else {
                throw DPOError.format("checkpoint '\(directory)': its reference adapter differs in shape from the trainer's")
            }
            restoredAdapter = a
        }
        try self.state.readFiles(from: directory, state: state)
        if case .adapter(let current)? = loraReference, let a = restoredAdapter { current.parameters.copy(from: a.parameters) }
        config = restoredConfig
        self.state.config = restoredConfig.optimizer
        pendingMetrics = (state["pending_metrics"]?.array ?? []).compactMap { $0.object.map(DPOMetrics.init(json:)) }
        if let r = restoredReference {
            if let existing = reference, existing.config.normalized == r.config.normalized,
               existing.quantizedBase == nil, existing.parameters.count == r.parameters.count {
                existing.parameters.copy(from: r.parameters)
            } else {
                reference = r
            }
        } else if referenceKind == .snapshot {
            reference = nil  // the snapshot had not been taken yet
        }
        applyPrecision()
        return state
    }
}
