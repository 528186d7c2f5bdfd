/// What one training loop needs of a trainer: DPO and SFT behind one face (`TrainingLoop` drives
/// any `Trainer`). A host that drives its own loop keeps using each trainer's `step(_:)`.
public protocol Trainer: AnyObject {
    /// One training example: `PreferencePair` (DPO) or `SFTExample` (SFT).
    associatedtype Example
    /// The model being trained.
    var model: LlamaModel { get }
    /// Optimizer steps taken.
    var globalStep: Int { get }
    /// Micro-batches accumulated since the last optimizer step.
    var pendingMicroBatches: Int { get }
    /// The optimizer and schedule settings in use.
    var optimizerConfig: OptimizerConfig { get }
    /// The training config by TRL's names (what a checkpoint restores).
    var configFields: JSONObject { get }
    /// One micro-batch (the trainer's `step`): its metrics by TRL's names, and whether it completed
    /// an optimizer step (then the metrics are the step's: means over its micro-batches, with
    /// `grad_norm` and `learning_rate`).
    func trainStep(_ batch: [Example]) throws -> TrainStepOutput
    /// Steps the optimizer with the fewer than `gradient_accumulation_steps` micro-batches
    /// accumulated so far, using their mean gradient (the last step of an epoch whose batches do not
    /// divide evenly, as transformers). Returns the step's metrics.
    func applyOptimizerAtEpochEnd() throws -> [(name: String, value: Double)]
    /// Metrics of a batch without an update, with `eval_` names.
    func evaluationMetrics(_ batch: [Example]) throws -> [(name: String, value: Double)]
    /// Sets the schedule's length and the accumulation count (refused mid-accumulation).
    func configureSchedule(maxSteps: Int, gradientAccumulationSteps: Int) throws
    /// Writes a checkpoint whose trainer_state.json also holds `extraState`'s keys.
    func saveCheckpoint(directory: String, extraState: JSONObject) throws
    /// Restores a checkpoint; returns its trainer_state.json.
    @discardableResult func loadCheckpoint(directory: String) throws -> JSONObject
    /// Throws what a step on a batch holding `example` would throw for it (message "pair 0: ..."
    /// or "example 0: ..."), so that a loop refuses a bad example before its first step.
    func check(_ example: Example) throws
    /// The ranks of data-parallel training (see `Communicator`); nil (the default) for one process.
    /// With one, `trainStep`, `applyOptimizerAtEpochEnd` and `evaluationMetrics` are collective.
    var communicator: Communicator? { get }
}

extension Trainer {
    public var communicator: Communicator? { nil }
}

/// The result of one micro-batch of `Trainer.trainStep`.
public struct TrainStepOutput {
    public var metrics: [(name: String, value: Double)]
    public var optimizerStepped: Bool

    public init(metrics: [(name: String, value: Double)], optimizerStepped: Bool) {
        self.metrics = metrics; self.optimizerStepped = optimizerStepped
    }
}

extension OptimizationState {
    /// The checks of `configureSchedule`: no micro-batches pending, a valid config.
    func configureSchedule(maxSteps: Int, gradientAccumulationSteps: Int) throws -> OptimizerConfig {
        if pendingMicroBatches > 0 {
            throw DPOError.wrongState("the schedule cannot change while \(pendingMicroBatches) micro-batches wait for the optimizer")
        }
        var c = config
        c.maxSteps = maxSteps
        c.gradientAccumulationSteps = gradientAccumulationSteps
        try c.validate()
        return c
    }

    /// k / r: the factor that turns r micro-batch gradients each divided by k into their mean.
    var epochEndScale: Double {
        Double(config.gradientAccumulationSteps) / Double(max(pendingMicroBatches, 1))
    }
}

extension DPOTrainer: Trainer {
    public var model: LlamaModel { policy }
    public var optimizerConfig: OptimizerConfig { config.optimizer }
    public var configFields: JSONObject { config.jsonObject }

    public func trainStep(_ batch: [PreferencePair]) throws -> TrainStepOutput {
        let r = try step(batch)
        return TrainStepOutput(metrics: r.metrics.named(), optimizerStepped: r.optimizerStepped)
    }

    public func applyOptimizerAtEpochEnd() throws -> [(name: String, value: Double)] {
        try applyOptimizer(knownNorm: nil, accumulationScale: state.epochEndScale).named()
    }

    public func evaluationMetrics(_ batch: [PreferencePair]) throws -> [(name: String, value: Double)] {
        try evaluate(batch).named(prefix: "eval_")
    }

    public func configureSchedule(maxSteps: Int, gradientAccumulationSteps: Int) throws {
        let c = try state.configureSchedule(maxSteps: maxSteps, gradientAccumulationSteps: gradientAccumulationSteps)
        config.optimizer = c
        state.config = c
    }
}

extension SFTTrainer: Trainer {
    public var optimizerConfig: OptimizerConfig { config.optimizer }
    public var configFields: JSONObject { config.jsonObject }

    public func trainStep(_ batch: [SFTExample]) throws -> TrainStepOutput {
        let r = try step(batch)
        return TrainStepOutput(metrics: r.metrics.named(), optimizerStepped: r.optimizerStepped)
    }

    public func applyOptimizerAtEpochEnd() throws -> [(name: String, value: Double)] {
        try applyOptimizer(knownNorm: nil, accumulationScale: state.epochEndScale).named()
    }

    public func evaluationMetrics(_ batch: [SFTExample]) throws -> [(name: String, value: Double)] {
        try evaluate(batch).named(prefix: "eval_")
    }

    public func configureSchedule(maxSteps: Int, gradientAccumulationSteps: Int) throws {
        let c = try state.configureSchedule(maxSteps: maxSteps, gradientAccumulationSteps: gradientAccumulationSteps)
        config.optimizer = c
        state.config = c
    }
}
