import CDPOHeader
import DPO

// SFTConfig from the C params struct and from a JSON object of TRL-named fields.

extension SFTConfig {
    init(_ p: dpo_sft_params) throws {
        self.init()
        maxLength = try maxLengthField(p.max_length)
        optimizer = try optimizerConfig(
            learningRate: p.learning_rate, weightDecay: p.weight_decay, beta1: p.adam_beta1, beta2: p.adam_beta2,
            epsilon: p.adam_epsilon, maxGradNorm: p.max_grad_norm, scheduler: p.lr_scheduler_type,
            warmupSteps: p.warmup_steps, warmupRatio: p.warmup_ratio, maxSteps: p.max_steps,
            accumulation: p.gradient_accumulation_steps, seed: p.seed, base: optimizer)
        try validate()
    }

    var cStruct: dpo_sft_params {
        var p = dpo_sft_params()
        p.struct_size = MemoryLayout<dpo_sft_params>.size
        p.max_length = Int64(maxLength ?? 0)
        optimizer.write(into: &p)
        return p
    }

    /// A validated config from host JSON: `max_length` and the optimizer fields (set through
    /// DPOConfig's TRL-named setter, which shares the optimizer fields).
    init(fields text: UnsafePointer<CChar>?, _ argument: String) throws {
        self.init()
        let object = try readFieldsJSON(text, argument)
        var carrier = DPOConfig()
        carrier.optimizer = optimizer
        for key in object.keys {
            guard let value = object[key] else { continue }
            if key == "max_length" {
                if value.isNull { maxLength = nil } else {
                    guard let m = value.int else { throw APIError.invalid("max_length must be an integer or null, got \(JSON.serialize(value, pretty: false))") }
                    maxLength = m
                }
            } else if optimizerFieldNames.contains(key) {
                try carrier.set(key, value)
            } else {
                throw APIError.invalid("unknown SFTConfig field '\(key)' (valid: max_length, \(optimizerFieldNames.joined(separator: ", ")))")
            }
        }
        optimizer = carrier.optimizer
        try validate()
    }

    /// Every field, TRL names.
    var jsonObject: JSONObject {
        var carrier = DPOConfig()
        carrier.optimizer = optimizer
        let all = carrier.jsonObject
        var o = JSONObject()
        o["max_length"] = maxLength.map { .number(Double($0)) } ?? .null
        for key in optimizerFieldNames { o[key] = all[key] }
        return o
    }
}
