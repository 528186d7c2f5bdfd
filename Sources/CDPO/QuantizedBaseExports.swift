import CDPOHeader
import DPO

// A GGUF base kept quantized (keep_base_quantized): load it, ask whether a model is one, and make
// its fp32 copy (for merge_and_unload and saving).

@_cdecl("dpo_model_load_quantized")
public func dpo_model_load_quantized(_ path: UnsafePointer<CChar>?, _ outModel: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_model_load_quantized") { _ in
        let out = try required(outModel, "out_model")
        let location = try readPath(path, "path")
        try registerModel(try LlamaModel.load(path: location, keepBaseQuantized: true), out)
    }
}

@_cdecl("dpo_model_is_quantized")
public func dpo_model_is_quantized(_ model: OpaquePointer?, _ outQuantized: UnsafeMutablePointer<Int32>?,
                                   _ outBytes: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_model_is_quantized") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let out = try required(outQuantized, "out_quantized")
        let base = m.model.quantizedBase
        out.pointee = base == nil ? 0 : 1
        outBytes?.pointee = Int64(base?.byteCount ?? 0)
    }
}

@_cdecl("dpo_model_dequantize")
public func dpo_model_dequantize(_ model: OpaquePointer?, _ outModel: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_model_dequantize") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let out = try required(outModel, "out_model")
        try registerModel(try m.model.dequantized(), out)  // LlamaModel(config:) checks the memory
    }
}
