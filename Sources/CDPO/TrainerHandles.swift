import CDPOHeader
import DPO

// The two trainer handles (dpo_trainer, dpo_sft_trainer) as one generic object over the engine's
// trainers, so that their exports share one implementation (SharedTrainerExports.swift).

/// What the C layer needs of an engine trainer besides `Trainer`: its C batch and metrics types,
/// how a batch is read and metrics written, and the settings a trainer handle keeps for its loop.
protocol CTrainer: Trainer {
    associatedtype EngineMetrics
    associatedtype CBatch
    associatedtype CMetrics
    /// The C type name of the handle ("dpo_trainer").
    static var handleName: String { get }
    static func examples(_ batch: UnsafePointer<CBatch>?) throws -> [Example]
    static func cMetrics(_ m: EngineMetrics, stepped: Bool, globalStep: Int) -> CMetrics
    func stepMetrics(_ batch: [Example]) throws -> (metrics: EngineMetrics, stepped: Bool)
    func evaluate(_ batch: [Example]) throws -> EngineMetrics
    func accumulate(_ batch: [Example]) throws -> EngineMetrics
    func applyOptimizer() throws -> EngineMetrics
    /// The examples of a prepared dataset of this trainer's kind (an error for the other kind).
    static func examples(of dataset: DatasetObject) throws -> [Example]
}

/// A trainer handle: the engine trainer, the model handles it uses, and the loop settings and data
/// settings of the config it was created with (TRL's config holds all three).
final class TrainerObject<T: CTrainer>: HandleObject {
    override class var typeName: String { T.handleName }
    let trainer: T
    let models: [ModelObject]
    let args: TrainingArguments
    let data: DataConfig
    init(_ trainer: T, models: [ModelObject], args: TrainingArguments, data: DataConfig) {
        self.trainer = trainer; self.models = models; self.args = args; self.data = data
    }
    override var dependencies: [HandleObject] { models }
}

typealias DPOTrainerObject = TrainerObject<DPOTrainer>
typealias SFTTrainerObject = TrainerObject<SFTTrainer>

extension DPOTrainer: CTrainer {
    static var handleName: String { "dpo_trainer" }
    static func examples(_ batch: UnsafePointer<dpo_preference_batch>?) throws -> [PreferencePair] {
        try readPreferenceBatch(batch)
    }
    static func cMetrics(_ m: DPOMetrics, stepped: Bool, globalStep: Int) -> dpo_metrics {
        metricsStruct(m, stepped: stepped, globalStep: globalStep)
    }
    func stepMetrics(_ batch: [PreferencePair]) throws -> (metrics: DPOMetrics, stepped: Bool) {
        let r = try step(batch)
        return (r.metrics, r.optimizerStepped)
    }
    static func examples(of dataset: DatasetObject) throws -> [PreferencePair] {
        try dataset.preferenceRows().map(\.pair)
    }
}

extension SFTTrainer: CTrainer {
    static var handleName: String { "dpo_sft_trainer" }
    static func examples(_ batch: UnsafePointer<dpo_completion_batch>?) throws -> [SFTExample] {
        try readCompletionBatch(batch).map { SFTExample(promptIds: $0.prompt, completionIds: $0.completion) }
    }
    static func cMetrics(_ m: SFTMetrics, stepped: Bool, globalStep: Int) -> dpo_sft_metrics {
        sftMetricsStruct(m, stepped: stepped, globalStep: globalStep)
    }
    func stepMetrics(_ batch: [SFTExample]) throws -> (metrics: SFTMetrics, stepped: Bool) {
        let r = try step(batch)
        return (r.metrics, r.optimizerStepped)
    }
    static func examples(of dataset: DatasetObject) throws -> [SFTExample] {
        try dataset.sftRows().enumerated().map { i, row in try row.example(location: RowLocation(index: i)) }
    }
}
