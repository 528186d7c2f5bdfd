/// Hooks into `TrainingLoop` (transformers' `TrainerCallback`, the events a host needs). Every
/// method has an empty default; the CLI prints records and draws progress with them, the Python
/// door forwards records, and `shouldStop` lets a host stop the run (Ctrl-C).
public protocol TrainerCallback: AnyObject {
    /// `train()` starts (after a resume's checkpoint is loaded).
    func onTrainBegin(state: TrainerState)
    /// An optimizer step finished; `metrics` are the step's (before any log, eval or save of it).
    func onStepEnd(state: TrainerState, metrics: [(name: String, value: Double)])
    /// A record was logged (train window, evaluation or the end-of-training summary).
    func onLog(_ record: LogRecord, state: TrainerState)
    /// A checkpoint was written.
    func onSave(checkpoint: String, state: TrainerState)
    /// Asked before every micro-batch: true stops the run at once, after a checkpoint of the exact
    /// state (mid-accumulation included), which `TrainOutput.interruptedCheckpoint` names.
    func shouldStop(state: TrainerState) -> Bool
}

extension TrainerCallback {
    public func onTrainBegin(state: TrainerState) {}
    public func onStepEnd(state: TrainerState, metrics: [(name: String, value: Double)]) {}
    public func onLog(_ record: LogRecord, state: TrainerState) {}
    public func onSave(checkpoint: String, state: TrainerState) {}
    public func shouldStop(state: TrainerState) -> Bool { false }
}

/// Where log records go (`report_to`): one sink per entry. Records reach a sink in order; when
/// `train()` starts, `begin` gets the history so far (a resumed run's), so the sink can rewrite
/// its output to hold exactly the run's records.
public protocol LogSink: AnyObject {
    func begin(history: [LogRecord]) throws
    func write(_ record: LogRecord) throws
}

/// `report_to=["jsonl"]`: `output_dir/metrics.jsonl`, one JSON object a line (`step` first, then
/// the names sorted). The file is rewritten whole and atomically at each record, so it is never
/// half a line.
public final class JSONLLogSink: LogSink {
    public let path: String
    private var text: [UInt8] = []

    public init(path: String) { self.path = path }

    public func begin(history: [LogRecord]) throws {
        text = []
        for r in history { text += line(r) }
        try writeFileAtomically(path, bytes: text)
    }

    public func write(_ record: LogRecord) throws {
        text += line(record)
        try writeFileAtomically(path, bytes: text)
    }

    private func line(_ r: LogRecord) -> [UInt8] {
        Array((JSON.serialize(.object(TrainerState.recordJSON(r)), pretty: false) + "\n").utf8)
    }
}
