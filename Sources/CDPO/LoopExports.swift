import CDPOHeader
import DPO

// Training-loop handles: the engine's TrainingLoop (transformers' Trainer.train) over datasets,
// for either trainer, with the host's callback for progress, log records and stopping.

/// What the exports need of a `TrainingLoop`, whatever its trainer.
protocol LoopDriver: AnyObject {
    func train(resume: String?) throws -> TrainOutput
    func evaluate(_ dataset: DatasetObject?) throws -> [String: Double]
    func log(_ record: LogRecord) throws
    var state: TrainerState { get }
    func saveModel(_ directory: String?) throws -> String
    func saveCheckpoint() throws -> String
}

final class LoopOf<T: CTrainer>: LoopDriver {
    let loop: TrainingLoop<T>
    init(_ loop: TrainingLoop<T>) { self.loop = loop }
    func train(resume: String?) throws -> TrainOutput { try loop.train(resumeFromCheckpoint: resume) }
    func evaluate(_ dataset: DatasetObject?) throws -> [String: Double] {
        try loop.evaluate(try dataset.map { try T.examples(of: $0) })
    }
    func log(_ record: LogRecord) throws { try loop.log(record) }
    var state: TrainerState { loop.state }
    func saveModel(_ directory: String?) throws -> String { try loop.saveModel(directory) }
    func saveCheckpoint() throws -> String { try loop.saveCheckpoint() }
}

/// The host's callback as a `TrainerCallback`: each event as JSON; a non-zero return asks the
/// loop to stop (after a checkpoint of the exact state).
final class HostCallback: TrainerCallback {
    let function: dpo_loop_callback
    let userData: UnsafeMutableRawPointer?
    private var stop = false

    init(_ function: dpo_loop_callback, _ userData: UnsafeMutableRawPointer?) {
        self.function = function; self.userData = userData
    }

    private func send(_ event: dpo_loop_event, _ object: JSONObject) {
        let text = JSON.serialize(.object(object), pretty: false)
        if text.withCString({ function(userData, Int32(event.rawValue), $0) }) != 0 { stop = true }
    }

    private func progress(_ state: TrainerState) -> JSONObject {
        var o = JSONObject()
        o["global_step"] = .number(Double(state.globalStep))
        o["max_steps"] = .number(Double(state.maxSteps))
        o["epoch"] = .number(state.epoch)
        return o
    }

    /// A new run: an earlier stop request (from a stopped run, or a log call) is forgotten.
    func onTrainBegin(state: TrainerState) {
        stop = false
        send(DPO_EVENT_TRAIN_BEGIN, progress(state))
    }
    func onStepEnd(state: TrainerState, metrics: [(name: String, value: Double)]) {
        var o = progress(state)
        var m = JSONObject()
        for (name, value) in metrics { m[name] = value.isFinite ? .number(value) : .null }
        o["metrics"] = .object(m)
        send(DPO_EVENT_STEP_END, o)
    }
    func onLog(_ record: LogRecord, state: TrainerState) { send(DPO_EVENT_LOG, TrainerState.recordJSON(record)) }
    func onSave(checkpoint: String, state: TrainerState) {
        var o = progress(state)
        o["checkpoint"] = .string(checkpoint)
        send(DPO_EVENT_SAVE, o)
    }
    func shouldStop(state: TrainerState) -> Bool { stop }
}

final class LoopObject: HandleObject {
    override class var typeName: String { "dpo_loop" }
    let driver: LoopDriver
    let trainer: HandleObject
    /// The JSON text the last call returned (valid until the next call on the loop).
    let output = MessageSlot()
    init(_ driver: LoopDriver, trainer: HandleObject) { self.driver = driver; self.trainer = trainer }
    override var dependencies: [HandleObject] { [trainer] + trainer.dependencies }

    func answer(_ object: JSONObject, _ out: UnsafeMutablePointer<UnsafePointer<CChar>?>?) {
        output.set(JSON.serialize(.object(object), pretty: false))
        out?.pointee = output.pointer
    }
}

/// A loop over the trainer behind `trainer`, with its arguments (the trainer's, changed by
/// `params->args_json`) and datasets.
func createLoop<T: CTrainer>(_ ctx: CallContext, _ trainer: OpaquePointer?, _ type: T.Type,
                             _ params: UnsafePointer<dpo_loop_params>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) throws {
    let out = try required(out, "out_loop")
    let p = try readStruct(params, "params")
    let t = try TrainerCalls<T>.use(ctx, trainer)
    var args = t.args
    if p.args_json != nil {
        let fields = try readFieldsJSON(p.args_json, "params->args_json")
        for key in fields.keys where try !args.set(key, fields[key]!) {
            throw APIError.invalid("params->args_json: '\(key)' is not a TrainingArguments field (valid: \(TrainingArguments.fieldNames.joined(separator: ", ")))")
        }
    }
    let train = try ctx.useOptional(p.train_dataset, DatasetObject.self, "params->train_dataset")
    // The same dataset may serve both (it is marked in use once).
    let eval = p.eval_dataset == p.train_dataset ? train
        : try ctx.useOptional(p.eval_dataset, DatasetObject.self, "params->eval_dataset")
    let callbacks: [TrainerCallback] = p.callback.map { [HostCallback($0, p.user_data)] } ?? []
    let loop = try TrainingLoop(trainer: t.trainer, args: args, trainDataset: try train.map { try T.examples(of: $0) } ?? [],
                                evalDataset: try eval.map { try T.examples(of: $0) }, callbacks: callbacks,
                                trainLocations: train?.dataset.locations, evalLocations: eval?.dataset.locations)
    out.pointee = try Registry.register(LoopObject(LoopOf(loop), trainer: t))
}

@_cdecl("dpo_trainer_loop_create")
public func dpo_trainer_loop_create(_ trainer: OpaquePointer?, _ params: UnsafePointer<dpo_loop_params>?,
                                    _ outLoop: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_loop_create") { ctx in try createLoop(ctx, trainer, DPOTrainer.self, params, outLoop) }
}

@_cdecl("dpo_sft_trainer_loop_create")
public func dpo_sft_trainer_loop_create(_ trainer: OpaquePointer?, _ params: UnsafePointer<dpo_loop_params>?,
                                        _ outLoop: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_loop_create") { ctx in try createLoop(ctx, trainer, SFTTrainer.self, params, outLoop) }
}

private func metricsJSON(_ m: [String: Double]) -> JSONObject {
    var o = JSONObject()
    for k in m.keys.sorted() { o[k] = m[k]!.isFinite ? .number(m[k]!) : .null }
    return o
}

@_cdecl("dpo_loop_train")
public func dpo_loop_train(_ loop: OpaquePointer?, _ resumeFromCheckpoint: UnsafePointer<CChar>?,
                           _ outJSON: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> dpo_status {
    exportCall("dpo_loop_train") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        let resume = try resumeFromCheckpoint.map { try readPath($0, "resume_from_checkpoint") }
        let r = try l.driver.train(resume: resume)
        var o = JSONObject()
        o["global_step"] = .number(Double(r.globalStep))
        o["training_loss"] = .number(r.trainingLoss)
        o["metrics"] = .object(metricsJSON(r.metrics))
        o["interrupted_checkpoint"] = r.interruptedCheckpoint.map { .string($0) } ?? .null
        l.answer(o, outJSON)
    }
}

@_cdecl("dpo_loop_evaluate")
public func dpo_loop_evaluate(_ loop: OpaquePointer?, _ dataset: OpaquePointer?,
                              _ outJSON: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> dpo_status {
    exportCall("dpo_loop_evaluate") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        let d = try ctx.useOptional(dataset, DatasetObject.self, "dataset")
        l.answer(metricsJSON(try l.driver.evaluate(d)), outJSON)
    }
}

@_cdecl("dpo_loop_log")
public func dpo_loop_log(_ loop: OpaquePointer?, _ recordJSON: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_loop_log") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        let fields = try readFieldsJSON(try required(recordJSON, "record_json"), "record_json")
        var record: LogRecord = [:]
        for key in fields.keys {
            guard let v = fields[key]?.double, v.isFinite else {
                throw APIError.invalid("record_json: '\(key)' must be a finite number")
            }
            record[key] = v
        }
        try l.driver.log(record)
    }
}

@_cdecl("dpo_loop_state")
public func dpo_loop_state(_ loop: OpaquePointer?, _ outJSON: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> dpo_status {
    exportCall("dpo_loop_state") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        _ = try required(outJSON, "out_json")
        l.answer(l.driver.state.jsonObject, outJSON)
    }
}

@_cdecl("dpo_loop_save_model")
public func dpo_loop_save_model(_ loop: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_loop_save_model") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        let dir = try directory.map { try readPath($0, "directory") }
        _ = try l.driver.saveModel(dir)
    }
}

@_cdecl("dpo_loop_save_checkpoint")
public func dpo_loop_save_checkpoint(_ loop: OpaquePointer?, _ outJSON: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> dpo_status {
    exportCall("dpo_loop_save_checkpoint") { ctx in
        let l = try ctx.use(loop, LoopObject.self, "loop")
        let dir = try l.driver.saveCheckpoint()
        var o = JSONObject()
        o["checkpoint"] = .string(dir)
        l.answer(o, outJSON)
    }
}

@_cdecl("dpo_loop_free")
public func dpo_loop_free(_ loop: OpaquePointer?) -> dpo_status {
    exportCall("dpo_loop_free") { _ in try Registry.remove(loop, LoopObject.self, "loop") }
}

@_cdecl("dpo_loop_last_error")
public func dpo_loop_last_error(_ loop: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(loop, LoopObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_loop handle")
}
