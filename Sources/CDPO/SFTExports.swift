import CDPOHeader
import DPO

// SFT trainer handles: create, and the exports shared with the DPO trainer
// (SharedTrainerExports.swift).

private typealias Calls = TrainerCalls<SFTTrainer>

func createSFTTrainer(_ ctx: CallContext, _ model: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                      peftConfig: LoraConfig? = nil, _ makeConfig: () throws -> SFTTrainingConfig) throws {
    let out = try required(out, "out_trainer")
    let m = try ctx.use(model, ModelObject.self, "model")
    let config = try makeConfig()
    if peftConfig == nil && m.model.adapter == nil && m.model.quantizedBase == nil { try checkTrainerMemory(m.model.config, copies: 4) }
    let trainer = try SFTTrainer(model: m.model, config: config.trainer, peftConfig: peftConfig)
    out.pointee = try Registry.register(SFTTrainerObject(trainer, models: [m], args: config.args, data: config.data))
}

@_cdecl("dpo_sft_default_params")
public func dpo_sft_default_params(_ params: UnsafeMutablePointer<dpo_sft_params>?) -> dpo_status {
    exportCall("dpo_sft_default_params") { _ in
        try outputStruct(params, "params").pointee = SFTConfig().cStruct
    }
}

@_cdecl("dpo_sft_trainer_config_json")
public func dpo_sft_trainer_config_json(_ fields: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?,
                                        _ capacity: UInt, _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_sft_trainer_config_json") { _ in
        let config = try SFTTrainingConfig(fields: fields, "fields_json")
        try writeText(JSON.serialize(.object(config.jsonObject)), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_sft_trainer_create")
public func dpo_sft_trainer_create(_ model: OpaquePointer?, _ params: UnsafePointer<dpo_sft_params>?,
                                   _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create") { ctx in
        try createSFTTrainer(ctx, model, outTrainer) {
            params == nil ? SFTTrainingConfig() : SFTTrainingConfig(trainer: try SFTConfig(try readStruct(params, "params")))
        }
    }
}

@_cdecl("dpo_sft_trainer_create_json")
public func dpo_sft_trainer_create_json(_ model: OpaquePointer?, _ json: UnsafePointer<CChar>?,
                                        _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create_json") { ctx in
        try createSFTTrainer(ctx, model, outTrainer) { try SFTTrainingConfig(fields: json, "config_json") }
    }
}

@_cdecl("dpo_sft_trainer_free")
public func dpo_sft_trainer_free(_ trainer: OpaquePointer?) -> dpo_status { Calls.free("dpo_sft_trainer_free", trainer) }

@_cdecl("dpo_sft_trainer_last_error")
public func dpo_sft_trainer_last_error(_ trainer: OpaquePointer?) -> UnsafePointer<CChar>? { Calls.lastError(trainer) }

@_cdecl("dpo_sft_trainer_step")
public func dpo_sft_trainer_step(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                 _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    Calls.step("dpo_sft_trainer_step", trainer, batch, outMetrics)
}

@_cdecl("dpo_sft_trainer_evaluate")
public func dpo_sft_trainer_evaluate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                     _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    Calls.evaluate("dpo_sft_trainer_evaluate", trainer, batch, outMetrics)
}

@_cdecl("dpo_sft_trainer_accumulate")
public func dpo_sft_trainer_accumulate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                       _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    Calls.accumulate("dpo_sft_trainer_accumulate", trainer, batch, outMetrics)
}

@_cdecl("dpo_sft_trainer_gradients")
public func dpo_sft_trainer_gradients(_ trainer: OpaquePointer?, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                      _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    Calls.gradients("dpo_sft_trainer_gradients", trainer, outData, outCount)
}

@_cdecl("dpo_sft_trainer_apply_optimizer")
public func dpo_sft_trainer_apply_optimizer(_ trainer: OpaquePointer?, _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    Calls.applyOptimizer("dpo_sft_trainer_apply_optimizer", trainer, outMetrics)
}

@_cdecl("dpo_sft_trainer_global_step")
public func dpo_sft_trainer_global_step(_ trainer: OpaquePointer?, _ outStep: UnsafeMutablePointer<Int64>?) -> dpo_status {
    Calls.globalStep("dpo_sft_trainer_global_step", trainer, outStep)
}

@_cdecl("dpo_sft_trainer_save_checkpoint")
public func dpo_sft_trainer_save_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    Calls.saveCheckpoint("dpo_sft_trainer_save_checkpoint", trainer, directory)
}

@_cdecl("dpo_sft_trainer_load_checkpoint")
public func dpo_sft_trainer_load_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    Calls.loadCheckpoint("dpo_sft_trainer_load_checkpoint", trainer, directory)
}
