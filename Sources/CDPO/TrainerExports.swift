import CDPOHeader
import DPO

// DPO trainer handles: create, step, evaluate, reference log-probs, the distributed grain,
// checkpoints, free.

/// Optimizer state (gradients, two AdamW moments, an accumulation backup) and a snapshot
/// reference must fit next to the weights.
func checkTrainerMemory(_ config: LlamaConfig, copies: Double) throws {
    try MemoryBudget.checkModel(config, copies: copies, "the optimizer state of this model")
}

func createTrainer(_ ctx: CallContext, _ policy: OpaquePointer?, _ reference: OpaquePointer?,
                   _ out: UnsafeMutablePointer<OpaquePointer?>?, _ makeConfig: () throws -> DPOConfig) throws {
    let out = try required(out, "out_trainer")
    if reference != nil && reference == policy {
        throw APIError.invalid("reference is the same handle as policy: pass NULL to use a snapshot of the policy's initial weights")
    }
    let p = try ctx.use(policy, ModelObject.self, "policy")
    let r = try ctx.useOptional(reference, ModelObject.self, "reference")
    let config = try makeConfig()
    let snapshot: Double = (r == nil && !config.precomputeRefLogProbs) ? 1 : 0
    try checkTrainerMemory(p.model.config, copies: 4 + snapshot)
    let trainer = try DPOTrainer(policy: p.model, reference: r?.model, config: config)
    out.pointee = try Registry.register(TrainerObject(trainer, policy: p, reference: r))
}

@_cdecl("dpo_trainer_default_params")
public func dpo_trainer_default_params(_ params: UnsafeMutablePointer<dpo_trainer_params>?) -> dpo_status {
    exportCall("dpo_trainer_default_params") { _ in
        try outputStruct(params, "params").pointee = DPOConfig().cStruct
    }
}

@_cdecl("dpo_trainer_config_json")
public func dpo_trainer_config_json(_ fields: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?,
                                    _ capacity: UInt, _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_trainer_config_json") { _ in
        let config = try DPOConfig(fields: fields, "fields_json")
        try writeText(JSON.serialize(.object(config.jsonObject)), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_trainer_create")
public func dpo_trainer_create(_ policy: OpaquePointer?, _ reference: OpaquePointer?,
                               _ params: UnsafePointer<dpo_trainer_params>?,
                               _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create") { ctx in
        try createTrainer(ctx, policy, reference, outTrainer) {
            params == nil ? DPOConfig() : try DPOConfig(try readStruct(params, "params"))
        }
    }
}

@_cdecl("dpo_trainer_create_json")
public func dpo_trainer_create_json(_ policy: OpaquePointer?, _ reference: OpaquePointer?,
                                    _ json: UnsafePointer<CChar>?,
                                    _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create_json") { ctx in
        try createTrainer(ctx, policy, reference, outTrainer) { try DPOConfig(fields: json, "config_json") }
    }
}

@_cdecl("dpo_trainer_free")
public func dpo_trainer_free(_ trainer: OpaquePointer?) -> dpo_status {
    exportCall("dpo_trainer_free") { _ in try Registry.remove(trainer, TrainerObject.self, "trainer") }
}

@_cdecl("dpo_trainer_last_error")
public func dpo_trainer_last_error(_ trainer: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(trainer, TrainerObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_trainer handle")
}

@_cdecl("dpo_trainer_step")
public func dpo_trainer_step(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                             _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    exportCall("dpo_trainer_step") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let pairs = try readPreferenceBatch(batch)
        let r = try t.step(pairs)
        out?.pointee = metricsStruct(r.metrics, stepped: r.optimizerStepped, globalStep: r.globalStep)
    }
}

@_cdecl("dpo_trainer_evaluate")
public func dpo_trainer_evaluate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                 _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    exportCall("dpo_trainer_evaluate") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let out = try outputStruct(outMetrics, "out_metrics")
        let pairs = try readPreferenceBatch(batch)
        out.pointee = metricsStruct(try t.evaluate(pairs), stepped: false, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_trainer_precompute_ref_logps")
public func dpo_trainer_precompute_ref_logps(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                             _ outChosen: UnsafeMutablePointer<Double>?,
                                             _ outRejected: UnsafeMutablePointer<Double>?, _ capacity: Int64) -> dpo_status {
    exportCall("dpo_trainer_precompute_ref_logps") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let pairs = try readPreferenceBatch(batch, withReference: false)
        if capacity < 0 { throw APIError.invalid("capacity = \(capacity) is negative") }
        if capacity < Int64(pairs.count) {
            throw APIError.tooSmall("capacity = \(capacity) is smaller than the batch's \(pairs.count) pairs")
        }
        let chosen = try required(outChosen, "out_chosen"), rejected = try required(outRejected, "out_rejected")
        for (i, r) in try t.precomputeReferenceLogProbs(pairs).enumerated() {
            chosen[i] = r.chosen
            rejected[i] = r.rejected
        }
    }
}

@_cdecl("dpo_trainer_accumulate")
public func dpo_trainer_accumulate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                   _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    exportCall("dpo_trainer_accumulate") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let pairs = try readPreferenceBatch(batch)
        let m = try t.accumulate(pairs)
        out?.pointee = metricsStruct(m, stepped: false, globalStep: t.globalStep)
    }
}

/// The model's gradient buffer, allocated (zeroed) if no backward has run yet. The engine
/// allocates it once per model and never replaces it, so the pointer is stable.
func gradientBuffer(_ model: LlamaModel, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                    _ outCount: UnsafeMutablePointer<Int64>?) throws {
    let data = try required(outData, "out_data"), count = try required(outCount, "out_count")
    if model.gradients == nil { try model.zeroGradients() }
    guard let g = model.gradients else { throw APIError.internal("the gradient buffer could not be allocated") }
    data.pointee = g.pointer
    count.pointee = Int64(g.count)
}

@_cdecl("dpo_trainer_gradients")
public func dpo_trainer_gradients(_ trainer: OpaquePointer?, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                  _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_trainer_gradients") { ctx in
        try gradientBuffer(try ctx.use(trainer, TrainerObject.self, "trainer").trainer.policy, outData, outCount)
    }
}

@_cdecl("dpo_trainer_apply_optimizer")
public func dpo_trainer_apply_optimizer(_ trainer: OpaquePointer?, _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    exportCall("dpo_trainer_apply_optimizer") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let m = try t.applyOptimizer()
        out?.pointee = metricsStruct(m, stepped: true, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_trainer_global_step")
public func dpo_trainer_global_step(_ trainer: OpaquePointer?, _ outStep: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_trainer_global_step") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        try required(outStep, "out_step").pointee = Int64(t.globalStep)
    }
}

@_cdecl("dpo_trainer_save_checkpoint")
public func dpo_trainer_save_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_trainer_save_checkpoint") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        try t.saveCheckpoint(directory: try readPath(directory, "directory"))
    }
}

/// Before the engine reads a checkpoint: the bounds and memory checks of its model directories.
func guardCheckpoint(_ directory: String) throws {
    let base = directory.hasSuffix("/") ? directory : directory + "/"
    try guardModelDirectory(base + "model")
    try guardModelDirectory(base + "reference")
}

@_cdecl("dpo_trainer_load_checkpoint")
public func dpo_trainer_load_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_trainer_load_checkpoint") { ctx in
        let t = try ctx.use(trainer, TrainerObject.self, "trainer").trainer
        let dir = try readPath(directory, "directory")
        try guardCheckpoint(dir)
        try t.loadCheckpoint(directory: dir)
    }
}
