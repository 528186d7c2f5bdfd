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
}
