/// A log record: transformers' `log_history` entry, metric name to value (`step` and `epoch`
/// included).
public typealias LogRecord = [String: Double]

/// The loop's state (transformers' `TrainerState`): written into each checkpoint's
/// trainer_state.json beside the trainer's own fields, so a resumed run continues with the same
/// batches, the same log window and the same log history.
public struct TrainerState: Equatable, Sendable {
    /// Optimizer steps taken.
    public var globalStep = 0
    /// Epochs done, with the fraction of the current one (transformers: epoch + micro-batches / per epoch).
    public var epoch = 0.0
    /// Optimizer steps of the run.
    public var maxSteps = 0
    /// Epochs the run spans (ceil).
    public var numTrainEpochs = 0
    public var loggingSteps = 0
    public var evalSteps = 0
    public var saveSteps = 0
    /// Examples per micro-batch (per rank).
    public var trainBatchSize = 0
    /// Ranks of data-parallel training (1: one process); a global micro-batch is
    /// `trainBatchSize` x `worldSize` examples. In trainer_state.json as `world_size` when > 1.
    public var worldSize = 1
    /// Every record `log` produced, in order (transformers' `log_history`).
    public var logHistory: [LogRecord] = []
    /// The optimizer steps since the last log (their metrics, for the next record's means).
    var window: [[(name: String, value: Double)]] = []

    public init() {}

    public static func == (a: TrainerState, b: TrainerState) -> Bool {
        a.globalStep == b.globalStep && a.epoch == b.epoch && a.maxSteps == b.maxSteps
            && a.numTrainEpochs == b.numTrainEpochs && a.loggingSteps == b.loggingSteps
            && a.evalSteps == b.evalSteps && a.saveSteps == b.saveSteps && a.trainBatchSize == b.trainBatchSize
            && a.worldSize == b.worldSize
            && a.logHistory == b.logHistory
            && a.window.map { $0.map(\.name) } == b.window.map { $0.map(\.name) }
            && a.window.map { $0.map(\.value) } == b.window.map { $0.map(\.value) }
    }

    /// The record of the steps in `window`, as transformers and TRL log them: `loss` and the
    /// trainer's metrics are means over the steps; `grad_norm`, `learning_rate` (the rate the last
    /// step used) and the cumulative `num_tokens` are the last step's.
    static func windowRecord(_ window: [[(name: String, value: Double)]]) -> LogRecord {
        var record: LogRecord = [:]
        guard let last = window.last else { return record }
        let lastOnly: Set<String> = ["grad_norm", "learning_rate", "num_tokens"]
        for (name, value) in last where lastOnly.contains(name) { record[name] = value }
        var sums: [String: Double] = [:], counts: [String: Int] = [:]
        for step in window {
            for (name, value) in step where !lastOnly.contains(name) {
                sums[name, default: 0] += value
                counts[name, default: 0] += 1
            }
        }
        for (name, sum) in sums { record[name] = sum / Double(counts[name]!) }
        return record
    }

    // MARK: - trainer_state.json

    /// The keys this state adds to a checkpoint's trainer_state.json (transformers' names where
    /// transformers has them; `global_step` is the trainer's own).
    var checkpointFields: JSONObject {
        var o = JSONObject()
        o["epoch"] = .number(epoch)
        o["max_steps"] = .number(Double(maxSteps))
        o["num_train_epochs"] = .number(Double(numTrainEpochs))
        o["logging_steps"] = .number(Double(loggingSteps))
        o["eval_steps"] = .number(Double(evalSteps))
        o["save_steps"] = .number(Double(saveSteps))
        o["train_batch_size"] = .number(Double(trainBatchSize))
        if worldSize > 1 { o["world_size"] = .number(Double(worldSize)) }
        o["log_history"] = .array(logHistory.map { .object(Self.recordJSON($0)) })
        o["log_window"] = .array(window.map { step in
            .array(step.map { .array([.string($0.name), .number($0.value)]) })
        })
        return o
    }

    /// The state as transformers' trainer_state.json names it: `global_step`, `epoch`,
    /// `max_steps`, ..., `log_history` (what the bindings show as `trainer.state`).
    public var jsonObject: JSONObject {
        var o = JSONObject()
        o["global_step"] = .number(Double(globalStep))
        for key in checkpointFields.keys where key != "log_window" { o[key] = checkpointFields[key] }
        return o
    }

    /// A record as a JSON object: `step` first, then the names sorted (non-finite values as null).
    public static func recordJSON(_ r: LogRecord) -> JSONObject {
        var o = JSONObject()
        if let step = r["step"] { o["step"] = .number(step) }
        for k in r.keys.sorted() where k != "step" { o[k] = r[k]!.isFinite ? .number(r[k]!) : .null }
        return o
    }

    /// Reads the loop's keys of a checkpoint's trainer_state.json; nil if it has none (a
    /// checkpoint written by a trainer outside the loop). `globalStep` comes from the trainer.
    static func fromCheckpoint(_ s: JSONObject, directory: String) throws -> TrainerState? {
        guard s["log_history"] != nil else { return nil }
        func fail(_ what: String) -> DPOError { .format("checkpoint '\(directory)': trainer_state.json: \(what)") }
        func int(_ key: String) throws -> Int {
            guard let v = s[key]?.int, v >= 0, v <= 1 << 50 else { throw fail("'\(key)' missing or outside [0, 2^50]") }
            return v
        }
        var t = TrainerState()
        guard let e = s["epoch"]?.double, e.isFinite, e >= 0 else { throw fail("'epoch' missing or not a number >= 0") }
        t.epoch = e
        t.globalStep = try int("global_step")
        t.maxSteps = try int("max_steps"); t.numTrainEpochs = try int("num_train_epochs")
        t.loggingSteps = try int("logging_steps"); t.evalSteps = try int("eval_steps")
        t.saveSteps = try int("save_steps"); t.trainBatchSize = try int("train_batch_size")
        if s["world_size"] != nil {
            t.worldSize = try int("world_size")
            if t.worldSize < 1 { throw fail("'world_size' must be >= 1") }
        }
        guard let history = s["log_history"]?.array else { throw fail("'log_history' is not a list") }
        t.logHistory = try history.enumerated().map { i, v in
            guard let o = v.object else { throw fail("log_history[\(i)] is not an object") }
            var r: LogRecord = [:]
            for k in o.keys {
                if o[k]!.isNull { r[k] = .nan; continue }
                guard let d = o[k]!.double else { throw fail("log_history[\(i)].\(k) is not a number") }
                r[k] = d
            }
            return r
        }
        guard let window = s["log_window"]?.array else { throw fail("'log_window' is not a list") }
        t.window = try window.enumerated().map { i, step in
            guard let entries = step.array else { throw fail("log_window[\(i)] is not a list") }
            return try entries.map { entry in
                guard let pair = entry.array, pair.count == 2, let name = pair[0].string, let value = pair[1].double else {
                    throw fail("log_window[\(i)] has an entry that is not [name, number]")
                }
                return (name, value)
            }
        }
        return t
    }
}

/// What `TrainingLoop.train()` returns (transformers' `TrainOutput`).
public struct TrainOutput: Equatable, Sendable {
    /// Optimizer steps taken (in total, resumed ones included).
    public var globalStep: Int
    /// Mean training loss over the optimizer steps of this `train()` call.
    public var trainingLoss: Double
    /// train_runtime, train_samples_per_second, train_steps_per_second, train_loss, epoch.
    public var metrics: [String: Double]
    /// Set when a callback stopped the run (e.g. Ctrl-C): the checkpoint written at the stop, from
    /// which `train(resumeFromCheckpoint:)` continues. The run is not finished then.
    public var interruptedCheckpoint: String?
}
