import ArgumentParser
import DPO

/// LoRA options with TRL's script argument names (trl.ModelConfig: use_peft, lora_r, lora_alpha,
/// lora_dropout, lora_target_modules, use_rslora) and TRL's defaults.
struct LoraOptions: ParsableArguments {
    @Flag(help: "use_peft: train a LoRA adapter; the base model stays frozen (without --reference, the reference is the base with the adapter off).")
    var usePeft = false
    @Option(help: "lora_r: adapter rank (default 16).") var loraR: Int?
    @Option(help: "lora_alpha: the update is scaled by alpha / r (default 32).") var loraAlpha: Double?
    @Option(help: "lora_dropout (default 0.05).") var loraDropout: Double?
    @Option(help: "lora_target_modules: comma-separated (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) or all-linear (default: q_proj,v_proj, PEFT's for Llama).")
    var loraTargetModules: String?
    @Flag(help: "use_rslora: scale alpha / sqrt(r).") var useRslora = false
    @Option(help: "A PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to load onto the model and train on; without --reference, the reference is a frozen copy of it.")
    var adapter: String?
    @Flag(help: "keep_base_quantized: keep the GGUF --model's matrices in their quantized form (dequantized tile by tile inside the products; needs --use-peft or --adapter). A GGUF save then merges into an fp32 copy.")
    var keepBaseQuantized = false

    func validate() throws {
        if keepBaseQuantized && !usePeft && adapter == nil {
            throw ValidationError("--keep-base-quantized needs --use-peft or --adapter: a quantized base trains only a LoRA adapter")
        }
        if !usePeft && (loraR != nil || loraAlpha != nil || loraDropout != nil || loraTargetModules != nil || useRslora) {
            throw ValidationError("--lora-r, --lora-alpha, --lora-dropout, --lora-target-modules and --use-rslora need --use-peft")
        }
        if usePeft && adapter != nil {
            throw ValidationError("give --use-peft (a fresh adapter) or --adapter (a trained one), not both")
        }
    }

    /// The fresh adapter's config (nil without --use-peft); `base` is written as base_model_name_or_path.
    func config(base: String?) throws -> LoraConfig? {
        guard usePeft else { return nil }
        var c = LoraConfig(r: loraR ?? 16, loraAlpha: loraAlpha ?? 32, loraDropout: loraDropout ?? 0.05, useRslora: useRslora)
        if let t = loraTargetModules {
            c.targetModules = try LoraConfig.targetModules(t.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        }
        c.baseModelNameOrPath = base
        try c.validate()
        return c
    }

    /// Loads --adapter onto `model`, if given.
    func loadAdapter(into model: LlamaModel) throws {
        if let adapter { try model.loadAdapter(directory: adapter) }
    }
}
