import CDPOHeader
import DPO

// LoRA adapters: PEFT's LoraConfig as a params struct or JSON, adapters on model handles
// (add, load, merge_and_unload, sizes, config), and trainers created with a peft_config.

extension LoraConfig {
    /// The C struct of this config (target_modules as static text of the library).
    var cStruct: dpo_lora_params {
        var p = dpo_lora_params()
        p.struct_size = MemoryLayout<dpo_lora_params>.size
        p.r = Int64(r); p.lora_alpha = loraAlpha; p.lora_dropout = loraDropout
        p.target_modules = nil
        p.use_rslora = useRslora ? 1 : 0
        p.init_lora_weights = 1
        return p
    }

    init(_ p: dpo_lora_params) throws {
        self.init()
        r = try checkedInt(p.r, "peft_config->r", 1...65536)
        loraAlpha = try finite(p.lora_alpha, "peft_config->lora_alpha")
        loraDropout = try finite(p.lora_dropout, "peft_config->lora_dropout")
        if let t = optionalString(p.target_modules) {
            targetModules = try LoraConfig.targetModules(t.split(separator: ",", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: " ") })
        }
        useRslora = try readFlag(p.use_rslora, "peft_config->use_rslora")
        switch p.init_lora_weights {
        case 1: initLoraWeights = .default
        case 0: initLoraWeights = .random
        case 2: initLoraWeights = .gaussian
        default: throw APIError.invalid("peft_config->init_lora_weights = \(p.init_lora_weights) must be 1 (True), 0 (False) or 2 (gaussian)")
        }
        do { try validate() } catch let e as DPOError { throw APIError.invalid("peft_config: \(e.message)") }
    }

    /// PEFT LoraConfig fields as a JSON object (absent = default); PEFT's adapter_config.json reader.
    init(jsonText text: UnsafePointer<CChar>?, _ argument: String) throws {
        let object = try readFieldsJSON(text, argument)
        var o = object
        if o["r"] == nil { o["r"] = .number(8) }
        do { try self.init(json: o, source: argument) } catch let e as DPOError { throw APIError.invalid(e.message) }
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s.removeFirst() }
        while s.last == c { s.removeLast() }
        return String(s)
    }
}

@_cdecl("dpo_lora_default_params")
public func dpo_lora_default_params(_ params: UnsafeMutablePointer<dpo_lora_params>?) -> dpo_status {
    exportCall("dpo_lora_default_params") { _ in
        try outputStruct(params, "params").pointee = LoraConfig().cStruct
    }
}

@_cdecl("dpo_model_add_adapter")
public func dpo_model_add_adapter(_ model: OpaquePointer?, _ params: UnsafePointer<dpo_lora_params>?, _ seed: UInt64) -> dpo_status {
    exportCall("dpo_model_add_adapter") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let config = try LoraConfig(try readStruct(params, "params"))
        try m.model.addAdapter(config, seed: seed)
    }
}

@_cdecl("dpo_model_add_adapter_json")
public func dpo_model_add_adapter_json(_ model: OpaquePointer?, _ json: UnsafePointer<CChar>?, _ seed: UInt64) -> dpo_status {
    exportCall("dpo_model_add_adapter_json") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let config = try LoraConfig(jsonText: try required(json, "peft_config_json"), "peft_config_json")
        try m.model.addAdapter(config, seed: seed)
    }
}

@_cdecl("dpo_model_load_adapter")
public func dpo_model_load_adapter(_ model: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_model_load_adapter") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        try m.model.loadAdapter(directory: try readPath(directory, "directory"))
    }
}

@_cdecl("dpo_model_merge_and_unload")
public func dpo_model_merge_and_unload(_ model: OpaquePointer?) -> dpo_status {
    exportCall("dpo_model_merge_and_unload") { ctx in
        try ctx.use(model, ModelObject.self, "model").model.mergeAndUnload()
    }
}

@_cdecl("dpo_model_unload")
public func dpo_model_unload(_ model: OpaquePointer?) -> dpo_status {
    exportCall("dpo_model_unload") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        guard m.model.adapter != nil else { throw APIError.wrongState("unload: the model has no LoRA adapter") }
        try m.model.detachAdapter()
    }
}

@_cdecl("dpo_model_adapter_num_parameters")
public func dpo_model_adapter_num_parameters(_ model: OpaquePointer?, _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_model_adapter_num_parameters") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        try required(outCount, "out_count").pointee = Int64(m.model.adapter?.parameterCount ?? 0)
    }
}

@_cdecl("dpo_model_adapter_config_json")
public func dpo_model_adapter_config_json(_ model: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt,
                                          _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_model_adapter_config_json") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        guard let a = m.model.adapter else { throw APIError.wrongState("the model has no LoRA adapter") }
        try writeText(JSON.serialize(.object(a.config.jsonObject)), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_trainer_create_peft")
public func dpo_trainer_create_peft(_ policy: OpaquePointer?, _ reference: OpaquePointer?,
                                    _ params: UnsafePointer<dpo_trainer_params>?, _ peft: UnsafePointer<dpo_lora_params>?,
                                    _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create_peft") { ctx in
        let lora = try LoraConfig(try readStruct(peft, "peft_config"))
        try createTrainer(ctx, policy, reference, outTrainer, peftConfig: lora) {
            params == nil ? DPOTrainingConfig() : DPOTrainingConfig(trainer: try DPOConfig(try readStruct(params, "params")))
        }
    }
}

@_cdecl("dpo_trainer_create_peft_json")
public func dpo_trainer_create_peft_json(_ policy: OpaquePointer?, _ reference: OpaquePointer?, _ json: UnsafePointer<CChar>?,
                                         _ peftJSON: UnsafePointer<CChar>?,
                                         _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_create_peft_json") { ctx in
        let lora = try LoraConfig(jsonText: try required(peftJSON, "peft_config_json"), "peft_config_json")
        try createTrainer(ctx, policy, reference, outTrainer, peftConfig: lora) { try DPOTrainingConfig(fields: json, "config_json") }
    }
}

@_cdecl("dpo_sft_trainer_create_peft")
public func dpo_sft_trainer_create_peft(_ model: OpaquePointer?, _ params: UnsafePointer<dpo_sft_params>?,
                                        _ peft: UnsafePointer<dpo_lora_params>?,
                                        _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create_peft") { ctx in
        let lora = try LoraConfig(try readStruct(peft, "peft_config"))
        try createSFTTrainer(ctx, model, outTrainer, peftConfig: lora) {
            params == nil ? SFTTrainingConfig() : SFTTrainingConfig(trainer: try SFTConfig(try readStruct(params, "params")))
        }
    }
}

@_cdecl("dpo_sft_trainer_create_peft_json")
public func dpo_sft_trainer_create_peft_json(_ model: OpaquePointer?, _ json: UnsafePointer<CChar>?, _ peftJSON: UnsafePointer<CChar>?,
                                             _ outTrainer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_create_peft_json") { ctx in
        let lora = try LoraConfig(jsonText: try required(peftJSON, "peft_config_json"), "peft_config_json")
        try createSFTTrainer(ctx, model, outTrainer, peftConfig: lora) { try SFTTrainingConfig(fields: json, "config_json") }
    }
}
