import CDPOHeader
import DPO

// Generation: params struct <-> GenerationConfig, and dpo_model_generate.

extension GenerationConfig {
    init(_ p: dpo_generate_params) throws {
        self.init()
        // Positions are int32 in the engine: prompt + new tokens stay far below 2^31.
        maxNewTokens = try checkedInt(p.max_new_tokens, "params->max_new_tokens", 0...(1 << 30))
        temperature = try finite(p.temperature, "params->temperature")
        topK = try checkedInt(p.top_k, "params->top_k", 0...maxCount)
        topP = try finite(p.top_p, "params->top_p")
        seed = p.seed
        if p.num_eos_token_ids < 0 {
            eosTokenIds = nil
        } else {
            let n = try checkedInt(p.num_eos_token_ids, "params->num_eos_token_ids", 0...(1 << 20))
            if n > 0 {
                let ids = try required(p.eos_token_ids, "params->eos_token_ids")
                eosTokenIds = Array(UnsafeBufferPointer(start: ids, count: n))
            } else {
                eosTokenIds = []
            }
        }
    }

    var cStruct: dpo_generate_params {
        var p = dpo_generate_params()
        p.struct_size = MemoryLayout<dpo_generate_params>.size
        p.max_new_tokens = Int64(maxNewTokens)
        p.temperature = temperature
        p.top_k = Int64(topK)
        p.top_p = topP
        p.seed = seed
        p.num_eos_token_ids = -1
        p.eos_token_ids = nil
        return p
    }
}

@_cdecl("dpo_generate_default_params")
public func dpo_generate_default_params(_ params: UnsafeMutablePointer<dpo_generate_params>?) -> dpo_status {
    exportCall("dpo_generate_default_params") { _ in
        try outputStruct(params, "params").pointee = GenerationConfig().cStruct
    }
}

@_cdecl("dpo_model_generate")
public func dpo_model_generate(_ model: OpaquePointer?, _ params: UnsafePointer<dpo_generate_params>?,
                               _ numPrompts: Int64, _ prompts: UnsafePointer<dpo_token_lists>?,
                               _ outIds: UnsafeMutablePointer<Int32>?, _ capacity: Int64,
                               _ outOffsets: UnsafeMutablePointer<Int64>?, _ outNeeded: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_model_generate") { ctx in
        let m = try ctx.use(model, ModelObject.self, "model")
        let config = params == nil ? GenerationConfig() : try GenerationConfig(try readStruct(params, "params"))
        let n = try batchCount(numPrompts, "num_prompts")
        let lists = try required(prompts, "prompts").pointee
        try checkBatchTokens([(lists, "prompts")], "prompts")
        let inputs = try readTokenLists(lists, count: n, "prompts")
        if capacity < 0 { throw APIError.invalid("capacity = \(capacity) is negative") }
        let offsets = try required(outOffsets, "out_offsets")
        let outputs = try m.model.generate(inputs, config: config)
        let total = outputs.reduce(0) { $0 + $1.count }
        outNeeded?.pointee = Int64(total)
        if Int64(total) > capacity {
            throw APIError.tooSmall("capacity = \(capacity) is too small for the \(total) generated tokens (num_prompts * max_new_tokens always suffices)")
        }
        if total > 0 {
            let ids = try required(outIds, "out_ids")
            var k = 0
            for out in outputs { for t in out { ids[k] = t; k += 1 } }
        }
        var k: Int64 = 0
        offsets[0] = 0
        for (i, out) in outputs.enumerated() { k += Int64(out.count); offsets[i + 1] = k }
    }
}
