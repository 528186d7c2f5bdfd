#if canImport(Glibc)
import Glibc
#endif

/// The training loop of transformers' `Trainer.train()`, once for every trainer (DPO, SFT) and
/// every door (Swift programs, the CLI, the bindings): epochs over the training examples in a
/// seeded order, gradient accumulation, a log record every `logging_steps` with the means over the
/// window, evaluation and checkpoints by strategy, `save_total_limit`, resume with bit-identical
/// weights and log history, and callbacks.
///
/// Per epoch (transformers' `_inner_training_loop`): the examples in the epoch's order (see
/// `TrainingArguments.shuffle`) cut into micro-batches of `per_device_train_batch_size` (the last
/// one shorter, or dropped with `dataloader_drop_last`); every `gradient_accumulation_steps`
/// micro-batches make an optimizer step, and an epoch's last step takes the micro-batches left.
/// After each step: log (`step % logging_steps == 0`, or the first / last step with
/// `logging_first_step` / `logging_last_step`), evaluate and save (steps strategy: every
/// `eval_steps` / `save_steps` and at the last step); after each epoch, and after the last step,
/// evaluate and save (epoch strategy). Then a summary record (train_runtime, train_loss, ...).
///
/// Data parallel (the trainer has a `Communicator`; set it before making the loop): every rank
/// runs this loop over the same dataset with the same arguments. A global micro-batch is
/// `per_device_train_batch_size` x ranks examples of the order above, rank r taking the r-th
/// `per_device_train_batch_size` of them (the last ones shorter or empty), so the ranks together
/// train exactly what one process with the global batch would; evaluation batches are split the
/// same way. Metrics are the global batch's on every rank; rank 0 alone writes the log sinks,
/// checkpoints and rotations. A stop (`shouldStop` on any rank) takes effect at the next
/// optimizer-step boundary, where a checkpoint holds no rank's partial gradients.
///
/// Not thread-safe: one loop is used by one thread at a time.
public final class TrainingLoop<T: Trainer> {
    public let trainer: T
    public let args: TrainingArguments
    public let trainDataset: [T.Example]
    public let evalDataset: [T.Example]?
    /// The loop's state: step, epoch, log history.
    public private(set) var state = TrainerState()
    public var callbacks: [TrainerCallback]
    /// The sinks of `report_to` (more can be added).
    public var logSinks: [LogSink]
    private var sinksOpen = false
    /// The trainer's communicator when the loop was made (nil: one process).
    public let communicator: Communicator?
    /// This process's rank and the number of ranks (0 and 1 without a communicator).
    public var rank: Int { communicator?.rank ?? 0 }
    public var worldSize: Int { communicator?.size ?? 1 }

    /// - Parameters:
    ///   - trainDataset: the training examples (what the data layer prepares, e.g.
    ///     `TokenizedPreference.pair`, `TokenizedSFT.example()`). May be empty for a loop that only
    ///     evaluates; `train()` then refuses.
    ///   - evalDataset: needed by `evaluate()` and by an `eval_strategy` other than "no".
    ///   - trainLocations / evalLocations: where each example came from (a prepared dataset's
    ///     `locations`), for the messages of examples refused here; default: their index.
    public init(trainer: T, args: TrainingArguments, trainDataset: [T.Example], evalDataset: [T.Example]? = nil,
                callbacks: [TrainerCallback] = [], trainLocations: [RowLocation]? = nil,
                evalLocations: [RowLocation]? = nil) throws {
        try args.validate()
        if let e = evalDataset, e.isEmpty { throw DPOError.invalidArgument("eval_dataset is empty") }
        if args.evalStrategy != .no && evalDataset == nil {
            throw DPOError.invalidArgument("eval_strategy '\(args.evalStrategy.rawValue)' needs an eval_dataset")
        }
        // Every example is checked now, so that none fails after optimizer steps have been taken.
        try Self.check(trainDataset, trainLocations, "train_dataset", trainer)
        if let evalDataset { try Self.check(evalDataset, evalLocations, "eval_dataset", trainer) }
        self.trainer = trainer
        self.args = args
        self.trainDataset = trainDataset
        self.evalDataset = evalDataset
        self.callbacks = callbacks
        communicator = trainer.communicator
        logSinks = (communicator?.rank ?? 0) == 0 ? args.makeLogSinks() : []
    }

    /// `trainer.check` on every example; a refused one is named by its location.
    private static func check(_ examples: [T.Example], _ locations: [RowLocation]?, _ name: String, _ trainer: T) throws {
        for (i, e) in examples.enumerated() {
            do { try trainer.check(e) } catch DPOError.invalidArgument(let message) {
                var m = Substring(message)
                for prefix in ["pair 0: ", "example 0: "] where m.hasPrefix(prefix) { m = m.dropFirst(prefix.count) }
                let at = locations.flatMap { i < $0.count ? $0[i] : nil } ?? RowLocation(index: i)
                throw DPOError.invalidArgument("\(name) \(at): \(m)")
            }
        }
    }

    // MARK: - Training

    /// Trains to `max_steps` optimizer steps, from `resumeFromCheckpoint` (or
    /// `args.resumeFromCheckpoint`) if given. A trainer that has stepped already continues from its
    /// own step count. Returns early, with `interruptedCheckpoint` set, when a callback stops it.
    public func train(resumeFromCheckpoint: String? = nil) throws -> TrainOutput {
        let n = trainDataset.count
        if n == 0 { throw DPOError.invalidArgument("train_dataset is empty") }
        if trainer.communicator !== communicator {
            throw DPOError.wrongState("the trainer's communicator changed after the training loop was made")
        }
        let shape = try args.epochShape(examples: n, worldSize: worldSize)
        let maxSteps = try args.resolvedMaxSteps(examples: n, worldSize: worldSize)
        let k = args.gradientAccumulationSteps, bs = args.perDeviceTrainBatchSize
        let globalBatch = bs * worldSize

        var next = state
        next.maxSteps = maxSteps
        next.numTrainEpochs = (maxSteps + shape.updateSteps - 1) / shape.updateSteps
        next.loggingSteps = args.loggingSteps
        next.evalSteps = args.resolvedEvalSteps
        next.saveSteps = args.saveSteps
        next.trainBatchSize = bs
        next.worldSize = worldSize
        let resume = resumeFromCheckpoint ?? args.resumeFromCheckpoint
        if resume == nil && trainer.globalStep >= maxSteps {
            throw DPOError.invalidArgument("train(): the trainer has taken \(trainer.globalStep) optimizer steps and max_steps is \(maxSteps): nothing to train (raise max_steps or num_train_epochs)")
        }
        // A run that saves checkpoints finds out now, not after its first save_steps, that
        // output_dir cannot be made (data parallel: rank 0, which writes them).
        if args.saveStrategy != .no && rank == 0 { try makeDirectories(args.outputDir) }
        if let resume {
            let loaded = try resumeTrainer(from: resume, shape: shape, accumulation: k)
            next.logHistory = loaded?.logHistory ?? []
            next.window = loaded?.window ?? []
        } else if trainer.globalStep == 0 && trainer.pendingMicroBatches == 0 {
            // transformers creates the scheduler from the arguments in train().
            try trainer.configureSchedule(maxSteps: maxSteps, gradientAccumulationSteps: k)
            next.logHistory = []; next.window = []
        } else {
            try checkAccumulation(trainer.optimizerConfig.gradientAccumulationSteps, "the trainer")
        }

        // Where the run stands: transformers' epochs_trained and steps_trained_in_current_epoch,
        // plus the micro-batches accumulated towards the next step.
        try checkPosition(steps: trainer.globalStep, pending: trainer.pendingMicroBatches, shape: shape, accumulation: k, "the trainer's")
        var epoch = trainer.globalStep / shape.updateSteps
        var micro = (trainer.globalStep % shape.updateSteps) * k + trainer.pendingMicroBatches
        next.globalStep = trainer.globalStep
        next.epoch = Double(epoch) + Double(micro) / Double(shape.microBatches)
        state = next
        sinksOpen = false  // the sinks start over with this run's history
        try openSinks()
        for c in callbacks { c.onTrainBegin(state: state) }

        let start = monotonicSeconds(), initialStep = trainer.globalStep
        var lossSum = 0.0, lossSteps = 0
        var order = epochOrder(epoch)
        while trainer.globalStep < maxSteps {
            if micro == shape.microBatches {
                try epochEnd()
                epoch += 1; micro = 0
                order = epochOrder(epoch)
            }
            if try stopRequested() {
                let dir = try saveCheckpoint()
                return TrainOutput(globalStep: trainer.globalStep, trainingLoss: lossSteps > 0 ? lossSum / Double(lossSteps) : 0,
                                   metrics: [:], interruptedCheckpoint: dir)
            }
            let lo = micro * globalBatch, hi = min(lo + globalBatch, n)
            let mine = communicator?.shard(of: hi - lo, perRank: bs) ?? 0..<(hi - lo)
            var out = try trainer.trainStep(order[(lo + mine.lowerBound)..<(lo + mine.upperBound)].map { trainDataset[$0] })
            micro += 1
            if !out.optimizerStepped && micro == shape.microBatches {
                out = TrainStepOutput(metrics: try trainer.applyOptimizerAtEpochEnd(), optimizerStepped: true)
            }
            guard out.optimizerStepped else { continue }
            state.globalStep = trainer.globalStep
            state.epoch = Double(epoch) + Double(micro) / Double(shape.microBatches)
            state.window.append(out.metrics)
            if let loss = out.metrics.first(where: { $0.name == "loss" })?.value { lossSum += loss; lossSteps += 1 }
            for c in callbacks { c.onStepEnd(state: state, metrics: out.metrics) }

            let step = state.globalStep, last = step >= maxSteps
            if step % args.loggingSteps == 0 || (step == 1 && args.loggingFirstStep) || (last && args.loggingLastStep) {
                try logWindow()
            }
            if args.evalStrategy == .steps && (step % state.evalSteps == 0 || last) { _ = try evaluate() }
            if args.saveStrategy == .steps && (step % args.saveSteps == 0 || last) { try saveCheckpoint() }
        }
        // transformers ends the epoch it stopped in (epoch strategy: evaluate and save).
        if trainer.globalStep > initialStep { try epochEnd() }

        let runtime = max(monotonicSeconds() - start, 1e-9)
        let trainingLoss = lossSteps > 0 ? lossSum / Double(lossSteps) : 0
        let samples = args.maxSteps > 0 ? Double(maxSteps) * Double(globalBatch) * Double(k) : Double(n) * args.numTrainEpochs
        var metrics: LogRecord = [
            "train_runtime": rounded(runtime, 4),
            "train_samples_per_second": rounded(samples / runtime, 3),
            "train_steps_per_second": rounded(Double(maxSteps) / runtime, 3),
            "train_loss": trainingLoss,
        ]
        try log(metrics)
        metrics["epoch"] = state.epoch
        return TrainOutput(globalStep: trainer.globalStep, trainingLoss: trainingLoss, metrics: metrics, interruptedCheckpoint: nil)
    }

    /// The training examples' order in `epoch` (see `TrainingArguments.shuffle`).
    public func epochOrder(_ epoch: Int) -> [Int] {
        var order = Array(trainDataset.indices)
        if args.shuffle {
            var rng = Xoshiro256(seed: (args.dataSeed ?? args.seed) &+ UInt64(epoch) &* 0x9E37_79B9)
            order.shuffle(using: &rng)
        }
        return order
    }

    /// Whether a callback asks to stop. Data parallel: asked only between optimizer steps, and
    /// collectively (one rank asking stops all).
    private func stopRequested() throws -> Bool {
        guard let c = communicator else { return callbacks.contains(where: { $0.shouldStop(state: state) }) }
        if trainer.pendingMicroBatches > 0 { return false }
        var v = [callbacks.contains(where: { $0.shouldStop(state: state) }) ? 1.0 : 0.0]
        try c.allreduceSum(&v)
        return v[0] > 0
    }

    private func epochEnd() throws {
        if args.evalStrategy == .epoch { _ = try evaluate() }
        if args.saveStrategy == .epoch { try saveCheckpoint() }
    }

    private func checkAccumulation(_ k: Int, _ whose: String) throws {
        if k != args.gradientAccumulationSteps {
            throw DPOError.invalidArgument("gradient_accumulation_steps is \(args.gradientAccumulationSteps), but \(whose) accumulates \(k) micro-batches per step")
        }
    }

    /// Refuses a position (optimizer steps taken, micro-batches accumulated) that no point of an
    /// epoch of `shape` has, e.g. a checkpoint of another dataset size.
    private func checkPosition(steps: Int, pending: Int, shape: (microBatches: Int, updateSteps: Int), accumulation k: Int, _ whose: String) throws {
        if (steps % shape.updateSteps) * k + pending >= shape.microBatches {
            throw DPOError.invalidArgument("\(whose) \(steps) steps and \(pending) pending micro-batches do not fit an epoch of \(shape.microBatches) micro-batches")
        }
    }

    /// Loads the checkpoint into the trainer and returns the loop state it holds (nil for a
    /// checkpoint written outside the loop). The loop's fields and the checkpoint's position in
    /// an epoch are checked before the trainer changes, so a refused resume leaves the trainer as
    /// it was.
    private func resumeTrainer(from directory: String, shape: (microBatches: Int, updateSteps: Int), accumulation k: Int) throws -> TrainerState? {
        if let bytes = try? readFile(joinPath(directory, "trainer_state.json")), let s = try? JSON.parse(bytes).object {
            // Values out of range are left for the checkpoint's own checks to report.
            if let steps = s["global_step"]?.int, let pending = s["pending_micro_batches"]?.int,
               (0...(1 << 50)).contains(steps), (0...(1 << 30)).contains(pending) {
                try checkPosition(steps: steps, pending: pending, shape: shape, accumulation: k, "the checkpoint '\(directory)':")
            }
            let pre = try TrainerState.fromCheckpoint(s, directory: directory)
            if let pre, pre.trainBatchSize * pre.worldSize != args.perDeviceTrainBatchSize * worldSize {
                func on(_ ranks: Int) -> String { ranks == 1 ? "" : " on \(ranks) ranks" }
                throw DPOError.invalidArgument("resume_from_checkpoint: '\(directory)' was trained with per_device_train_batch_size \(pre.trainBatchSize)\(on(pre.worldSize)), the arguments give \(args.perDeviceTrainBatchSize)\(on(worldSize)) (the batches would differ)")
            }
            if let k = s["config"]?.object?["gradient_accumulation_steps"]?.int {
                try checkAccumulation(k, "the checkpoint '\(directory)'")
            }
        }
        let s = try trainer.loadCheckpoint(directory: directory)
        return try TrainerState.fromCheckpoint(s, directory: directory)
    }

    // MARK: - Logging, evaluation, saving

    /// Logs a record (transformers' `Trainer.log`): adds `epoch` and `step`, appends it to
    /// `state.logHistory`, writes it to the sinks and hands it to the callbacks.
    public func log(_ logs: LogRecord) throws {
        var record = logs
        record["epoch"] = state.epoch
        record["step"] = Double(state.globalStep)
        try openSinks()
        state.logHistory.append(record)  // on every rank: a resumed run's history is rank 0's
        for sink in logSinks { try sink.write(record) }
        for c in callbacks { c.onLog(record, state: state) }
    }

    private func logWindow() throws {
        let record = TrainerState.windowRecord(state.window)
        state.window = []
        try log(record)
    }

    private func openSinks() throws {
        if sinksOpen { return }
        if !logSinks.isEmpty { try makeDirectories(args.outputDir) }
        for sink in logSinks { try sink.begin(history: state.logHistory) }
        sinksOpen = true
    }

    /// Metrics of the model on `dataset` (default `evalDataset`; batches of
    /// `per_device_eval_batch_size` x ranks, in order, split across the ranks as training batches
    /// are), `eval_` names, each the mean over the examples (batch means weighted by batch size);
    /// logged as a record. Data parallel: collective (every rank calls it with the same dataset).
    @discardableResult
    public func evaluate(_ dataset: [T.Example]? = nil) throws -> [String: Double] {
        guard let eval = dataset ?? evalDataset else { throw DPOError.invalidArgument("evaluate: there is no eval_dataset") }
        if eval.isEmpty { throw DPOError.invalidArgument("evaluate: the eval dataset is empty") }
        var names: [String] = [], sums: [String: Double] = [:]
        var i = 0
        let batch = args.perDeviceEvalBatchSize * worldSize
        while i < eval.count {
            let hi = min(i + batch, eval.count)
            let mine = communicator?.shard(of: hi - i, perRank: args.perDeviceEvalBatchSize) ?? 0..<(hi - i)
            for (name, value) in try trainer.evaluationMetrics(Array(eval[(i + mine.lowerBound)..<(i + mine.upperBound)])) {
                if sums[name] == nil { names.append(name) }
                sums[name, default: 0] += value * Double(hi - i)
            }
            i = hi
        }
        let metrics = sums.mapValues { $0 / Double(eval.count) }
        try log(metrics)
        return metrics
    }

    /// Writes `output_dir/checkpoint-<step>` (the trainer's checkpoint with the loop's state in
    /// trainer_state.json), then applies `save_total_limit`. Returns its path. Data parallel: rank
    /// 0 writes (the ranks' states are the same), the others only return the path.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        let dir = joinPath(args.outputDir, "checkpoint-\(trainer.globalStep)")
        if rank != 0 { return dir }
        try trainer.saveCheckpoint(directory: dir, extraState: state.checkpointFields)
        for c in callbacks { c.onSave(checkpoint: dir, state: state) }
        try rotateCheckpoints(keeping: "checkpoint-\(trainer.globalStep)")
        return dir
    }

    /// `save_total_limit`: deletes the oldest (lowest step) swift-dpo checkpoints of `output_dir`
    /// beyond the limit, never `keeping` (the one just written) nor anything else.
    private func rotateCheckpoints(keeping: String) throws {
        guard let limit = args.saveTotalLimit else { return }
        let prefix = "checkpoint-"
        var found: [(step: Int, path: String)] = []
        for name in listDirectory(args.outputDir) where name.hasPrefix(prefix) && name != keeping {
            let digits = name.dropFirst(prefix.count)
            guard let step = Int(digits), step >= 0, String(step) == digits else { continue }
            let path = joinPath(args.outputDir, name)
            if isDirectory(path) && isTrainerCheckpoint(path) { found.append((step, path)) }
        }
        found.sort { $0.step < $1.step }
        for old in found.prefix(max(0, found.count + 1 - limit)) {
            try removeCheckpointDirectory(old.path, isCheckpoint: isTrainerCheckpoint)
        }
    }

    /// Saves the trained model (config.json + model.safetensors) to `directory`, default
    /// `output_dir` (transformers' `save_model`). Returns the directory. Data parallel: rank 0 writes.
    @discardableResult
    public func saveModel(_ directory: String? = nil) throws -> String {
        let dir = directory ?? args.outputDir
        if rank != 0 { return dir }
        try trainer.model.save(directory: dir)
        return dir
    }
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

private func rounded(_ x: Double, _ digits: Int) -> Double {
    let f = pow(10.0, Double(digits))
    return (x * f).rounded() / f
}
