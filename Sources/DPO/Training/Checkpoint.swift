/// Trainer checkpoints: one directory, written atomically (built beside the target, then renamed
/// into place), holding everything an exact resume needs:
///
///     model/                   the policy as a Hugging Face directory (config.json + model.safetensors)
///     reference/               the reference weights (separate model, snapshot or TR-DPO mix), if any
///     optimizer.safetensors    AdamW moments `exp_avg`, `exp_avg_sq` and, mid-accumulation, `gradients`
///     trainer_state.json       step counters, accumulation state, RNG, config, pending metrics
///
/// Resuming from step k and training to n gives bit-identical weights to an uninterrupted run.
enum CheckpointFormat {
    static let name = "swift-dpo-trainer-checkpoint"
    static let version = 1
}

extension OptimizationState {
    func writeFiles(into dir: String, state: inout JSONObject) throws {
        try model.save(directory: joinPath(dir, "model"))
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = [
            ("exp_avg", [adam.m.count], UnsafeBufferPointer(adam.m.buffer)),
            ("exp_avg_sq", [adam.v.count], UnsafeBufferPointer(adam.v.buffer)),
        ]
        if pendingMicroBatches > 0, let g = model.gradients {
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
        let loaded = try LlamaModel.load(directory: joinPath(dir, "model"))
        guard loaded.config.normalized == model.config.normalized else {
            throw DPOError.invalidArgument("checkpoint '\(dir)': its model config differs from the trainer's model")
        }
        let opt = try SafetensorsFile.open(joinPath(dir, "optimizer.safetensors"))
        func int(_ key: String) throws -> Int {
            guard let v = state[key]?.int, v >= 0 else { throw DPOError.format("checkpoint '\(dir)': trainer_state.json: '\(key)' missing or invalid") }
            return v
        }
        let pending = try int("pending_micro_batches")
        let words = try (state["rng_state"]?.array ?? []).map { v -> UInt64 in
            guard let s = v.string, let w = UInt64(s, radix: 16) else { throw DPOError.format("checkpoint '\(dir)': bad rng_state") }
            return w
        }
        guard words.count == 4 else { throw DPOError.format("checkpoint '\(dir)': rng_state must have 4 words") }
        // Read everything before changing anything, so a bad checkpoint leaves the trainer as it was.
        let m = try opt.floats("exp_avg"), v = try opt.floats("exp_avg_sq")
        guard m.count == adam.m.count, v.count == adam.v.count else {
            throw DPOError.format("checkpoint '\(dir)': optimizer moments have \(m.count) entries, the model has \(adam.m.count)")
        }
        let grads = pending > 0 ? try opt.floats("gradients") : nil
        if let grads, grads.count != model.layout.count {
            throw DPOError.format("checkpoint '\(dir)': gradients have \(grads.count) entries, the model has \(model.layout.count)")
        }
        globalStep = try int("global_step")
        adam.steps = try int("adam_steps")
        numTokens = try int("num_tokens")
        pendingMicroBatches = pending
        rng.state = (words[0], words[1], words[2], words[3])
        model.parameters.copy(from: loaded.parameters)
        _ = m.withUnsafeBufferPointer { adam.m.buffer.update(fromContentsOf: $0) }
        _ = v.withUnsafeBufferPointer { adam.v.buffer.update(fromContentsOf: $0) }
        try model.zeroGradients()
        if let grads { _ = grads.withUnsafeBufferPointer { model.gradients!.buffer.update(fromContentsOf: $0) } }
        model.releaseWorkspace()
    }
}

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
    return state
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
    /// Writes a checkpoint directory (replacing an existing one atomically).
    public func saveCheckpoint(directory: String) throws {
        try writeDirectoryAtomically(directory) { dir in
            var state = newCheckpointState(kind: "dpo")
            try self.state.writeFiles(into: dir, state: &state)
            state["config"] = .object(config.jsonObject)
            state["reference_kind"] = .string(referenceKind.rawValue)
            state["pending_metrics"] = .array(pendingMetrics.map { .object($0.jsonObject) })
            if let reference { try reference.save(directory: joinPath(dir, "reference")) }
            try writeFileAtomically(joinPath(dir, "trainer_state.json"), bytes: Array((JSON.serialize(.object(state)) + "\n").utf8))
        }
    }

    /// Restores a checkpoint written by `saveCheckpoint` into this trainer: policy weights,
    /// reference, optimizer moments, accumulated gradients, counters, RNG and config. The trainer
    /// must have been created with the same model config and reference kind.
    public func loadCheckpoint(directory: String) throws {
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
        try self.state.readFiles(from: directory, state: state)
        config = restoredConfig
        self.state.config = restoredConfig.optimizer
        pendingMetrics = (state["pending_metrics"]?.array ?? []).compactMap { $0.object.map(DPOMetrics.init(json:)) }
        if let r = restoredReference {
            if let existing = reference, existing.config.normalized == r.config.normalized {
                existing.parameters.copy(from: r.parameters)
            } else {
                reference = r
            }
        } else if referenceKind == .snapshot {
            reference = nil  // the snapshot had not been taken yet
        }
    }
}
