import CDPOHeader
import DPO

// DPO trainer handles: create (with a reference model or none), reference log-probs, and the
// exports shared with the SFT trainer (SharedTrainerExports.swift).

private typealias Calls = TrainerCalls<DPOTrainer>

func createTrainer(_ ctx: CallContext, _ policy: OpaquePointer?, _ reference: OpaquePointer?,
                   _ out: UnsafeMutablePointer<OpaquePointer?>?, peftConfig: LoraConfig? = nil,
                   _ makeConfig: () throws -> DPOTrainingConfig) throws {
    let out = try required(out, "out_trainer")
    if reference != nil && reference == policy {
        throw APIError.invalid("reference is the same handle as policy: pass NULL to use a snapshot of the policy's initial weights")
    }
    let p = try ctx.use(policy, ModelObject.self, "policy")
    let r = try ctx.useOptional(reference, ModelObject.self, "reference")
    let config = try makeConfig()
    let lora = peftConfig != nil || p.model.adapter != nil
    let snapshot: Double = (r == nil && !config.trainer.precomputeRefLogProbs && !lora) ? 1 : 0
    // LoRA: no gradient, moments or snapshot of the base (the adapter's are small).
    // A base kept quantized trains no full model: the engine refuses that by name.
    if !lora && p.model.quantizedBase == nil { try checkTrainerMemory(p.model.config, copies: 4 + snapshot) }
    let trainer = try DPOTrainer(policy: p.model, reference: r?.model, config: config.trainer, peftConfig: peftConfig)
    out.pointee = try Registry.register(DPOTrainerObject(trainer, models: [p] + (r.map { [$0] } ?? []),
                                                         args: config.args, data: config.data))
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
        let config = try DPOTrainingConfig(fields: fields, "fields_json")
        try writeText(JSON.serialize(.object(config.jsonObject)), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_trainer_create")
public func dpo_trainer_create(_ policy: OpaquePointer?, _ reference: OpaquePointer?,
                               _ params: UnsafePointer<dpo_trainer_params>?,
                               _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create") { ctx in
        try createTrainer(ctx, policy, reference, outTrainer) {
            params == nil ? DPOTrainingConfig() : DPOTrainingConfig(trainer: try DPOConfig(try readStruct(params, "params")))
        }
    }
}

@_cdecl("dpo_trainer_create_json")
public func dpo_trainer_create_json(_ policy: OpaquePointer?, _ reference: OpaquePointer?,
                                    _ json: UnsafePointer<CChar>?,
                                    _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create_json") { ctx in
        try createTrainer(ctx, policy, reference, outTrainer) { try DPOTrainingConfig(fields: json, "config_json") }
    }
}

@_cdecl("dpo_trainer_precompute_ref_logps")
public func dpo_trainer_precompute_ref_logps(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                             _ outChosen: UnsafeMutablePointer<Double>?,
                                             _ outRejected: UnsafeMutablePointer<Double>?, _ capacity: Int64) -> dpo_status {
    exportCall("dpo_trainer_precompute_ref_logps") { ctx in
        let t = try Calls.use(ctx, trainer).trainer
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

@_cdecl("dpo_trainer_free")
public func dpo_trainer_free(_ trainer: OpaquePointer?) -> dpo_status { Calls.free("dpo_trainer_free", trainer) }

@_cdecl("dpo_trainer_last_error")
public func dpo_trainer_last_error(_ trainer: OpaquePointer?) -> UnsafePointer<CChar>? { Calls.lastError(trainer) }

@_cdecl("dpo_trainer_step")
public func dpo_trainer_step(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                             _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    Calls.step("dpo_trainer_step", trainer, batch, outMetrics)
}

@_cdecl("dpo_trainer_evaluate")
public func dpo_trainer_evaluate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                 _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    Calls.evaluate("dpo_trainer_evaluate", trainer, batch, outMetrics)
}

@_cdecl("dpo_trainer_accumulate")
public func dpo_trainer_accumulate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_preference_batch>?,
                                   _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    Calls.accumulate("dpo_trainer_accumulate", trainer, batch, outMetrics)
}

@_cdecl("dpo_trainer_gradients")
public func dpo_trainer_gradients(_ trainer: OpaquePointer?, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                  _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    Calls.gradients("dpo_trainer_gradients", trainer, outData, outCount)
}

@_cdecl("dpo_trainer_apply_optimizer")
public func dpo_trainer_apply_optimizer(_ trainer: OpaquePointer?, _ outMetrics: UnsafeMutablePointer<dpo_metrics>?) -> dpo_status {
    Calls.applyOptimizer("dpo_trainer_apply_optimizer", trainer, outMetrics)
}

@_cdecl("dpo_trainer_global_step")
public func dpo_trainer_global_step(_ trainer: OpaquePointer?, _ outStep: UnsafeMutablePointer<Int64>?) -> dpo_status {
    Calls.globalStep("dpo_trainer_global_step", trainer, outStep)
}

@_cdecl("dpo_trainer_save_checkpoint")
public func dpo_trainer_save_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    Calls.saveCheckpoint("dpo_trainer_save_checkpoint", trainer, directory)
}

@_cdecl("dpo_trainer_load_checkpoint")
public func dpo_trainer_load_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    Calls.loadCheckpoint("dpo_trainer_load_checkpoint", trainer, directory)
}
