import CDPOHeader
import DPO

// SFT trainer handles: the same shape as the DPO trainer's exports.

func examples(_ items: [(prompt: [Int32], completion: [Int32])]) -> [SFTExample] {
    items.map { SFTExample(promptIds: $0.prompt, completionIds: $0.completion) }
}

func createSFTTrainer(_ ctx: CallContext, _ model: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                      _ makeConfig: () throws -> SFTConfig) throws {
    let out = try required(out, "out_trainer")
    let m = try ctx.use(model, ModelObject.self, "model")
    let config = try makeConfig()
    try checkTrainerMemory(m.model.config, copies: 4)
    let trainer = try SFTTrainer(model: m.model, config: config)
    out.pointee = try Registry.register(SFTObject(trainer, model: m))
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
        let config = try SFTConfig(fields: fields, "fields_json")
        try writeText(JSON.serialize(.object(config.jsonObject)), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_sft_trainer_create")
public func dpo_sft_trainer_create(_ model: OpaquePointer?, _ params: UnsafePointer<dpo_sft_params>?,
                                   _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create") { ctx in
        try createSFTTrainer(ctx, model, outTrainer) {
            params == nil ? SFTConfig() : try SFTConfig(try readStruct(params, "params"))
        }
    }
}

@_cdecl("dpo_sft_trainer_create_json")
public func dpo_sft_trainer_create_json(_ model: OpaquePointer?, _ json: UnsafePointer<CChar>?,
                                        _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create_json") { ctx in
        try createSFTTrainer(ctx, model, outTrainer) { try SFTConfig(fields: json, "config_json") }
    }
}

@_cdecl("dpo_sft_trainer_free")
public func dpo_sft_trainer_free(_ trainer: OpaquePointer?) -> dpo_status {
    exportCall("dpo_sft_trainer_free") { _ in try Registry.remove(trainer, SFTObject.self, "trainer") }
}

@_cdecl("dpo_sft_trainer_last_error")
public func dpo_sft_trainer_last_error(_ trainer: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(trainer, SFTObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_sft_trainer handle")
}

@_cdecl("dpo_sft_trainer_step")
public func dpo_sft_trainer_step(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                 _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    exportCall("dpo_sft_trainer_step") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let items = try readCompletionBatch(batch)
        let r = try t.step(examples(items))
        out?.pointee = sftMetricsStruct(r.metrics, stepped: r.optimizerStepped, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_sft_trainer_evaluate")
public func dpo_sft_trainer_evaluate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                     _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    exportCall("dpo_sft_trainer_evaluate") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        let out = try outputStruct(outMetrics, "out_metrics")
        let items = try readCompletionBatch(batch)
        out.pointee = sftMetricsStruct(try t.evaluate(examples(items)), stepped: false, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_sft_trainer_accumulate")
public func dpo_sft_trainer_accumulate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                       _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    exportCall("dpo_sft_trainer_accumulate") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let items = try readCompletionBatch(batch)
        let m = try t.accumulate(examples(items))
        out?.pointee = sftMetricsStruct(m, stepped: false, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_sft_trainer_gradients")
public func dpo_sft_trainer_gradients(_ trainer: OpaquePointer?, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                      _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_sft_trainer_gradients") { ctx in
        try gradientBuffer(try ctx.use(trainer, SFTObject.self, "trainer").trainer.model, outData, outCount)
    }
}

@_cdecl("dpo_sft_trainer_apply_optimizer")
public func dpo_sft_trainer_apply_optimizer(_ trainer: OpaquePointer?, _ outMetrics: UnsafeMutablePointer<dpo_sft_metrics>?) -> dpo_status {
    exportCall("dpo_sft_trainer_apply_optimizer") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        let out = try optionalOutput(outMetrics, "out_metrics")
        let m = try t.applyOptimizer()
        out?.pointee = sftMetricsStruct(m, stepped: true, globalStep: t.globalStep)
    }
}

@_cdecl("dpo_sft_trainer_global_step")
public func dpo_sft_trainer_global_step(_ trainer: OpaquePointer?, _ outStep: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_sft_trainer_global_step") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        try required(outStep, "out_step").pointee = Int64(t.globalStep)
    }
}

@_cdecl("dpo_sft_trainer_save_checkpoint")
public func dpo_sft_trainer_save_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_sft_trainer_save_checkpoint") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        try t.saveCheckpoint(directory: try readPath(directory, "directory"))
    }
}

@_cdecl("dpo_sft_trainer_load_checkpoint")
public func dpo_sft_trainer_load_checkpoint(_ trainer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_sft_trainer_load_checkpoint") { ctx in
        let t = try ctx.use(trainer, SFTObject.self, "trainer").trainer
        let dir = try readPath(directory, "directory")
        try guardCheckpoint(dir)
        try t.loadCheckpoint(directory: dir)
    }
}
