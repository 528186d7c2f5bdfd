/// When the loop evaluates or saves (transformers' `IntervalStrategy` / `SaveStrategy`; "best" is
/// not supported).
public enum IntervalStrategy: String, CaseIterable, Sendable {
    case no, steps, epoch

    public init(name: String, field: String) throws {
        guard let s = IntervalStrategy(rawValue: name) else {
            throw DPOError.invalidArgument("\(field): unknown value '\(name)' (valid: no, steps, epoch)")
        }
        self = s
    }
}

/// The loop's settings: transformers' `TrainingArguments` fields that the seed's workflow sets,
/// with transformers' names (Swift-cased) and defaults, except `logging_steps`, whose default is
/// TRL's (10; transformers' is 500) since DPOConfig and SFTConfig change it.
///
/// How it relates to `DPOConfig` / `SFTConfig`: their `OptimizerConfig` keeps the optimizer and
/// the schedule's shape (learning_rate, weight_decay, adam_*, max_grad_norm, lr_scheduler_type,
/// warmup); `TrainingArguments` owns the loop. As transformers creates its scheduler from the
/// arguments in `train()`, a fresh `TrainingLoop.train()` writes the resolved `max_steps` (the
/// schedule's length) and `gradient_accumulation_steps` (the loss scaling) into the trainer's
/// `OptimizerConfig` (`Trainer.configureSchedule`). On resume the checkpoint's config is the
/// trainer's, as it was when the checkpoint was written.
public struct TrainingArguments: Equatable, Sendable {
    /// `output_dir`: checkpoints (`checkpoint-<step>`), metrics.jsonl and, by default, the saved model.
    public var outputDir: String = "trainer_output"
    /// `num_train_epochs`: used when `max_steps` is not positive; fractions allowed (ceil of the steps).
    public var numTrainEpochs: Double = 3
    /// `max_steps`: optimizer steps of the run; -1 (or any value <= 0) derives them from the epochs.
    public var maxSteps: Int = -1
    public var perDeviceTrainBatchSize: Int = 8
    public var perDeviceEvalBatchSize: Int = 8
    /// `gradient_accumulation_steps`: micro-batches per optimizer step. As in transformers, an epoch
    /// ends with a shorter step when its batches do not divide evenly (mean over the micro-batches it has).
    public var gradientAccumulationSteps: Int = 1
    /// `logging_steps`: a log record every N optimizer steps, with the means over those steps.
    public var loggingSteps: Int = 10
    /// `logging_first_step`: also log after the first step.
    public var loggingFirstStep: Bool = false
    /// swift-dpo's twin of `logging_first_step`: also log after the last step when it is not a
    /// multiple of `logging_steps` (transformers leaves those steps to `train_loss` only).
    public var loggingLastStep: Bool = false
    public var evalStrategy: IntervalStrategy = .no
    /// `eval_steps` (steps strategy); nil: `logging_steps`, as transformers.
    public var evalSteps: Int? = nil
    public var saveStrategy: IntervalStrategy = .steps
    public var saveSteps: Int = 500
    /// `save_total_limit`: keep at most this many `checkpoint-<step>` folders in `output_dir`, deleting
    /// the oldest (by step; only swift-dpo checkpoints, never the one just written). nil: keep all.
    public var saveTotalLimit: Int? = nil
    /// `seed`: the data order's seed unless `data_seed` is set.
    public var seed: UInt64 = 42
    public var dataSeed: UInt64? = nil
    /// `shuffle`: the train sampler shuffles, as transformers' RandomSampler. The order is ours,
    /// deterministic: epoch e's order is the training set shuffled (Swift's `shuffle(using:)`) by
    /// xoshiro256** seeded with `(data_seed ?? seed) + e * 0x9E3779B9` (wrapping), so a resumed run
    /// sees the same batches. false: the dataset's own order every epoch.
    public var shuffle: Bool = true
    /// `dataloader_drop_last`: drop the last, incomplete batch of each epoch.
    public var dataloaderDropLast: Bool = false
    /// `resume_from_checkpoint`: a `checkpoint-<step>` folder `train()` resumes from.
    public var resumeFromCheckpoint: String? = nil
    /// `report_to`: where log records go besides `state.logHistory` and the callbacks: "none", or
    /// any of "jsonl" (`output_dir/metrics.jsonl`, one record a line) and "tensorboard" (event
    /// files in `logging_dir`, see `TensorBoardLogSink`).
    public var reportTo: [String] = ["jsonl"]
    /// `logging_dir`: the TensorBoard run directory. transformers 5 dropped this field for the
    /// environment variable `TENSORBOARD_LOGGING_DIR`; swift-dpo keeps transformers 4's field and
    /// resolves as transformers 5 does when it is nil: `TENSORBOARD_LOGGING_DIR` (with `~`
    /// expanded), else `output_dir/runs/<%b%d_%H-%M-%S>_<hostname>` (local time), at the time the
    /// `TrainingLoop` is made (`resolvedLoggingDir()`).
    public var loggingDir: String? = nil
    /// `disable_tqdm`: no progress bar or log lines from the door that runs the loop (the
    /// command line and the Python package print them by default; the engine prints nothing).
    public var disableTqdm: Bool = false

    public init() {}

    /// The eval interval in steps (`eval_steps`, else `logging_steps`).
    public var resolvedEvalSteps: Int { evalSteps ?? loggingSteps }

    /// Refuses invalid values, naming the field.
    public func validate() throws {
        func check(_ ok: Bool, _ field: String, _ value: Any, _ rule: String) throws {
            if !ok { throw DPOError.invalidArgument("\(field) must be \(rule), got \(value)") }
        }
        try check(!outputDir.isEmpty, "output_dir", "''", "a directory path")
        for (field, path) in [("output_dir", outputDir), ("logging_dir", loggingDir), ("resume_from_checkpoint", resumeFromCheckpoint)] {
            if let path, path.utf8.contains(0) { throw DPOError.invalidArgument("\(field) must not contain a NUL character") }
        }
        try check(numTrainEpochs > 0 && numTrainEpochs <= 1e6, "num_train_epochs", numTrainEpochs, "in (0, 1e6]")
        try check(maxSteps <= 1 << 40, "max_steps", maxSteps, "<= 2^40 (or <= 0 for epochs)")
        try check(perDeviceTrainBatchSize >= 1 && perDeviceTrainBatchSize <= 1 << 30, "per_device_train_batch_size", perDeviceTrainBatchSize, "in [1, 2^30]")
        try check(perDeviceEvalBatchSize >= 1 && perDeviceEvalBatchSize <= 1 << 30, "per_device_eval_batch_size", perDeviceEvalBatchSize, "in [1, 2^30]")
        try check(gradientAccumulationSteps >= 1 && gradientAccumulationSteps <= 1 << 30, "gradient_accumulation_steps", gradientAccumulationSteps, "in [1, 2^30]")
        try check(loggingSteps >= 1, "logging_steps", loggingSteps, ">= 1")
        if let e = evalSteps { try check(e >= 1, "eval_steps", e, ">= 1") }
        try check(saveSteps >= 1, "save_steps", saveSteps, ">= 1")
        if let l = saveTotalLimit { try check(l >= 1, "save_total_limit", l, ">= 1 or unset") }
        for sink in reportTo where !["none", "jsonl", "tensorboard"].contains(sink) {
            throw DPOError.invalidArgument("report_to: unknown value '\(sink)' (valid: none, jsonl, tensorboard)")
        }
        if let d = loggingDir { try check(!d.isEmpty, "logging_dir", "''", "a directory path or unset") }
        if reportTo.contains("none") && reportTo.count > 1 {
            throw DPOError.invalidArgument("report_to: 'none' cannot be combined with other values, got \(reportTo)")
        }
    }

    /// The shape of an epoch over `examples` training examples: micro-batches per epoch and
    /// optimizer steps per epoch (transformers' `len(dataloader)` and `num_update_steps_per_epoch`).
    /// With `worldSize` data-parallel ranks a micro-batch is `per_device_train_batch_size` x
    /// `worldSize` examples (the global batch).
    public func epochShape(examples: Int, worldSize: Int = 1) throws -> (microBatches: Int, updateSteps: Int) {
        if examples <= 0 { throw DPOError.invalidArgument("train_dataset is empty") }
        if worldSize < 1 || worldSize > 1 << 20 { throw DPOError.invalidArgument("world size must be in [1, 2^20], got \(worldSize)") }
        let bs = perDeviceTrainBatchSize * worldSize
        let batches = dataloaderDropLast ? examples / bs : (examples + bs - 1) / bs
        if batches == 0 {
            let what = worldSize == 1 ? "per_device_train_batch_size \(bs)" : "per_device_train_batch_size \(perDeviceTrainBatchSize) x \(worldSize) ranks"
            throw DPOError.invalidArgument("dataloader_drop_last: the \(examples) training examples make no full batch of \(what)")
        }
        let k = gradientAccumulationSteps
        return (batches, max(1, (batches + k - 1) / k))
    }

    /// Optimizer steps of the run: `max_steps` if positive, else ceil(num_train_epochs x steps per epoch).
    public func resolvedMaxSteps(examples: Int, worldSize: Int = 1) throws -> Int {
        if maxSteps > 0 { return maxSteps }
        let perEpoch = try epochShape(examples: examples, worldSize: worldSize).updateSteps
        let steps = (numTrainEpochs * Double(perEpoch)).rounded(.up)
        if !(steps <= 0x1p40) {
            throw DPOError.invalidArgument("num_train_epochs \(numTrainEpochs) x \(perEpoch) steps per epoch is more than 2^40 optimizer steps")
        }
        return max(1, Int(steps))
    }
}
