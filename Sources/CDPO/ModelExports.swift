import CDPOHeader
import DPO

// Model handles: create, load, save, free, getters and sequence log-probs.

func registerModel(_ model: LlamaModel, _ out: UnsafeMutablePointer<OpaquePointer?>) throws {
    out.pointee = try Registry.register(ModelObject(model))
}

func createRandomModel(_ config: LlamaConfig, seed: UInt64, _ out: UnsafeMutablePointer<OpaquePointer?>) throws {
    try MemoryBudget.checkModel(config, copies: 1, "a model of \(MemoryBudget.countText(ParameterLayout.parameterCount(config))) parameters")
    try registerModel(try LlamaModel.randomlyInitialized(config: config, seed: seed), out)
}

@_cdecl("dpo_model_default_config")
public func dpo_model_default_config(_ config: UnsafeMutablePointer<dpo_model_config>?) -> dpo_status {
    exportCall("dpo_model_default_config") { _ in
        let out = try outputStruct(config, "config")
        out.pointee = try LlamaConfig().cStruct()
    }
}

@_cdecl("dpo_model_create")
public func dpo_model_create(_ config: UnsafePointer<dpo_model_config>?, _ seed: UInt64,
                             _ outModel: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_model_create") { _ in
        let out = try required(outModel, "out_model")
        try createRandomModel(try LlamaConfig(try readStruct(config, "config")), seed: seed, out)
    }
}

@_cdecl("dpo_model_create_json")
public func dpo_model_create_json(_ json: UnsafePointer<CChar>?, _ seed: UInt64,
                                  _ outModel: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_model_create_json") { _ in
        let out = try required(outModel, "out_model")
        let config = try LlamaConfig(jsonText: try readString(json, "config_json"), "config_json")
        try createRandomModel(config, seed: seed, out)
    }
}

@_cdecl("dpo_model_load")
public func dpo_model_load(_ path: UnsafePointer<CChar>?, _ outModel: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_model_load") { _ in
        let out = try required(outModel, "out_model")
        let location = try readPath(path, "path")
        try guardModelDirectory(location)
        try registerModel(try LlamaModel.load(path: location), out)
    }
}

@_cdecl("dpo_model_save")
public func dpo_model_save(_ model: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_model_save") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        try m.model.save(directory: try readPath(directory, "directory"))
    }
}

@_cdecl("dpo_model_save_gguf")
public func dpo_model_save_gguf(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ type: UnsafePointer<CChar>?,
                                _ tokenizer: OpaquePointer?) -> dpo_status {
    exportCall("dpo_model_save_gguf") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let location = try readPath(path, "path")
        let typeName = try readString(type, "type")
        guard let saveType = GGUFSaveType(name: typeName) else {
            throw APIError.invalid("type = '\(typeName)' is not one of f32, f16, bf16, q8_0")
        }
        let t = try ctx.useOptional(tokenizer, TokenizerObject.self, "tokenizer")
        try m.model.saveGGUF(path: location, type: saveType, metadata: t?.tokenizer.ggufMetadata())
    }
}

@_cdecl("dpo_model_free")
public func dpo_model_free(_ model: OpaquePointer?) -> dpo_status {
    exportCall("dpo_model_free") { _ in try Registry.remove(model, ModelObject.self, "model") }
}

@_cdecl("dpo_model_last_error")
public func dpo_model_last_error(_ model: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(model, ModelObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_model handle")
}

@_cdecl("dpo_model_get_config")
public func dpo_model_get_config(_ model: OpaquePointer?, _ outConfig: UnsafeMutablePointer<dpo_model_config>?) -> dpo_status {
    exportCall("dpo_model_get_config") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let out = try outputStruct(outConfig, "out_config")
        out.pointee = try m.model.config.cStruct()
    }
}

@_cdecl("dpo_model_config_json")
public func dpo_model_config_json(_ model: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt,
                                  _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_model_config_json") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        try writeText(JSON.serialize(m.model.config.json()), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_model_num_parameters")
public func dpo_model_num_parameters(_ model: OpaquePointer?, _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_model_num_parameters") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        try required(outCount, "out_count").pointee = Int64(m.model.parameterCount)
    }
}

@_cdecl("dpo_model_sequence_logps")
public func dpo_model_sequence_logps(_ model: OpaquePointer?, _ batch: UnsafePointer<dpo_completion_batch>?,
                                     _ outLogps: UnsafeMutablePointer<Double>?, _ capacity: Int64) -> dpo_status {
    exportCall("dpo_model_sequence_logps") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let items = try readCompletionBatch(batch)
        if capacity < 0 { throw APIError.invalid("capacity = \(capacity) is negative") }
        if capacity < Int64(items.count) {
            throw APIError.tooSmall("capacity = \(capacity) is smaller than the batch's \(items.count) items")
        }
        let out = try required(outLogps, "out_logps")
        let sums = try m.model.sequenceLogProbs(items)
        for (i, s) in sums.enumerated() { out[i] = s }
    }
}
