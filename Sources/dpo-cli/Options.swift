import ArgumentParser
import DPO

/// Every DPOConfig field as a --kebab-case option with TRL's name and default.
struct DPOOptions: ParsableArguments {
    @Option(help: "beta: KL regularisation strength.") var beta: Double = 0.1
    @Option(help: "loss_type: one name or a comma-separated list (\(DPOLossType.allCases.map(\.rawValue).joined(separator: ", "))).")
    var lossType: String = "sigmoid"
    @Option(help: "loss_weights: comma-separated, one per loss type (default all 1).") var lossWeights: String?
    @Option(help: "label_smoothing.") var labelSmoothing: Double = 0
    @Option(help: "f_divergence_type: reverse_kl, forward_kl, js_divergence, alpha_divergence.") var fDivergenceType: String = "reverse_kl"
    @Option(help: "f_alpha_divergence_coef.") var fAlphaDivergenceCoef: Double = 0.5
    @Option(help: "ld_alpha: LD-DPO weight of tokens past the shorter completion (default off).") var ldAlpha: Double?
    @Flag(help: "use_weighting: WPO weights.") var useWeighting = false
    @Option(help: "discopop_tau.") var discopopTau: Double = 0.05
    @Option(help: "max_length: longest prompt+completion (0 = no limit).") var maxLength: Int = 1024
    @Option(help: "truncation_mode: keep_start or keep_end.") var truncationMode: String = "keep_start"
    @Flag(help: "precompute_ref_log_probs: compute the reference log-probs once, then hold no reference model.") var precomputeRefLogProbs = false
    @Flag(help: "sync_ref_model: TR-DPO reference mixing.") var syncRefModel = false
    @Option(help: "ref_model_mixup_alpha.") var refModelMixupAlpha: Double = 0.6
    @Option(help: "ref_model_sync_steps.") var refModelSyncSteps: Int = 512

    func apply(to c: inout DPOConfig) throws {
        try c.set("beta", .number(beta))
        try c.set("loss_type", .array(lossType.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) }))
        if let lossWeights {
            let ws = try lossWeights.split(separator: ",").map { s -> JSONValue in
                guard let d = Double(s.trimmingCharacters(in: .whitespaces)) else { throw CLIError("--loss-weights: '\(s)' is not a number") }
                return .number(d)
            }
            try c.set("loss_weights", .array(ws))
        }
        try c.set("label_smoothing", .number(labelSmoothing))
        try c.set("f_divergence_type", .string(fDivergenceType))
        try c.set("f_alpha_divergence_coef", .number(fAlphaDivergenceCoef))
        try c.set("ld_alpha", ldAlpha.map { .number($0) } ?? .null)
        try c.set("use_weighting", .bool(useWeighting))
        try c.set("discopop_tau", .number(discopopTau))
        try c.set("max_length", maxLength == 0 ? .null : .number(Double(maxLength)))
        try c.set("truncation_mode", .string(truncationMode))
        try c.set("precompute_ref_log_probs", .bool(precomputeRefLogProbs))
        try c.set("sync_ref_model", .bool(syncRefModel))
        try c.set("ref_model_mixup_alpha", .number(refModelMixupAlpha))
        try c.set("ref_model_sync_steps", .number(Double(refModelSyncSteps)))
    }
}

/// Optimizer, schedule and loop options (transformers' TrainingArguments names).
struct TrainingOptions: ParsableArguments {
    @Option(help: "learning_rate (default: 1e-6 for DPO, 2e-5 for SFT, as TRL).") var learningRate: Double?
    @Option(help: "weight_decay.") var weightDecay: Double = 0
    @Option(help: "adam_beta1.") var adamBeta1: Double = 0.9
    @Option(help: "adam_beta2.") var adamBeta2: Double = 0.999
    @Option(help: "adam_epsilon.") var adamEpsilon: Double = 1e-8
    @Option(help: "max_grad_norm (0 disables clipping).") var maxGradNorm: Double = 1.0
    @Option(help: "lr_scheduler_type: constant, linear, cosine, constant_with_warmup.") var lrSchedulerType: String = "linear"
    @Option(help: "warmup_steps.") var warmupSteps: Int = 0
    @Option(help: "warmup_ratio.") var warmupRatio: Double = 0
    @Option(help: "max_steps: optimizer steps (-1: from --num-train-epochs).") var maxSteps: Int = -1
    @Option(help: "num_train_epochs (used when --max-steps is -1).") var numTrainEpochs: Double = 3
    @Option(help: "gradient_accumulation_steps.") var gradientAccumulationSteps: Int = 1
    @Option(help: "per_device_train_batch_size: examples per micro-batch.") var perDeviceTrainBatchSize: Int = 8
    @Option(help: "per_device_eval_batch_size: examples per evaluation batch.") var perDeviceEvalBatchSize: Int = 8
    @Option(help: "seed (data order and fresh-model init).") var seed: Int = 42
    @Option(help: "data_seed: seed of the data order (default: --seed).") var dataSeed: Int?
    @Flag(help: "dataloader_drop_last: drop each epoch's last, incomplete batch.") var dataloaderDropLast = false
    @Option(help: "logging_steps: log every N optimizer steps.") var loggingSteps: Int = 10
    @Option(help: "eval_strategy with --eval-data: steps or epoch (default steps).") var evalStrategy: String?
    @Option(help: "eval_steps: evaluate on --eval-data every N steps (default: at logging steps).") var evalSteps: Int?
    @Option(help: "save_strategy: no, steps or epoch (default: steps with --save-steps, else no).") var saveStrategy: String?
    @Option(help: "save_steps: write a checkpoint every N steps (and at the last step).") var saveSteps: Int?
    @Option(help: "save_total_limit: keep at most N checkpoints in --output, deleting the oldest.") var saveTotalLimit: Int?
    @Option(help: "report_to: none, or jsonl (<output>/metrics.jsonl), tensorboard (event files in $TENSORBOARD_LOGGING_DIR, else <output>/runs/<date>_<host>) or both, comma-separated.") var reportTo: String = "jsonl"
    @Option(help: "Directory for metrics.jsonl, metrics.svg, checkpoints and the final model.") var output: String = "runs/dpo"
    @Option(help: "Resume from this checkpoint directory.") var resume: String?
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "bf16: bf16 mixed precision (TRL's bf16=True, PyTorch's CPU autocast): the matrix products of the model (and the reference) take bf16 inputs and accumulate in fp32; weights, gradients, AdamW, norms, softmax and the loss stay fp32. Native AVX512-BF16 kernels where the CPU has them, else the same math through fp32 products.") var bf16 = false
    @Option(help: "Format of the final model: safetensors (a Hugging Face directory, <output>/model) or gguf (one file, <output>/model.gguf, for llama.cpp / Ollama, with the tokenizer). Default: gguf for a model loaded from a GGUF file, else safetensors.") var saveFormat: String?
    @Option(help: "Tensor type of a gguf save: f32, f16, bf16 or q8_0 (norms stay f32).") var saveDtype: String = "f32"

    func validate() throws {
        // Bounds that keep the step arithmetic below exact and overflow-free (the engine takes at
        // most 2^40 steps).
        if perDeviceTrainBatchSize < 1 || perDeviceTrainBatchSize > 1 << 30 {
            throw ValidationError("--per-device-train-batch-size must be in [1, 2^30], got \(perDeviceTrainBatchSize)")
        }
        if gradientAccumulationSteps < 1 || gradientAccumulationSteps > 1 << 30 {
            throw ValidationError("--gradient-accumulation-steps must be in [1, 2^30], got \(gradientAccumulationSteps)")
        }
        if loggingSteps < 1 { throw ValidationError("--logging-steps must be >= 1, got \(loggingSteps)") }
        if let e = evalSteps, e < 1 { throw ValidationError("--eval-steps must be >= 1, got \(e)") }
        if let s = saveSteps, s < 1 { throw ValidationError("--save-steps must be >= 1, got \(s)") }
        if maxSteps == 0 || maxSteps < -1 { throw ValidationError("--max-steps must be >= 1 or -1, got \(maxSteps)") }
        if !(numTrainEpochs > 0 && numTrainEpochs <= 1e6) { throw ValidationError("--num-train-epochs must be in (0, 1e6], got \(numTrainEpochs)") }
        if seed < 0 { throw ValidationError("--seed must be >= 0, got \(seed)") }
        if let d = dataSeed, d < 0 { throw ValidationError("--data-seed must be >= 0, got \(d)") }
        if perDeviceEvalBatchSize < 1 || perDeviceEvalBatchSize > 1 << 30 {
            throw ValidationError("--per-device-eval-batch-size must be in [1, 2^30], got \(perDeviceEvalBatchSize)")
        }
        if let l = saveTotalLimit, l < 1 { throw ValidationError("--save-total-limit must be >= 1, got \(l)") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be >= 1, got \(t)") }
        if let f = saveFormat, f != "safetensors" && f != "gguf" {
            throw ValidationError("--save-format must be safetensors or gguf, got '\(f)'")
        }
        if GGUFSaveType(name: saveDtype) == nil { throw ValidationError("--save-dtype must be f32, f16, bf16 or q8_0, got '\(saveDtype)'") }
    }

    /// How the final model is written: GGUF by default for a model that came from a GGUF file.
    func finalSave(modelPath: String?, codec: TextCodec) throws -> FinalSave {
        let gguf = saveFormat.map { $0 == "gguf" } ?? (modelPath.map(isGGUFModelPath) ?? false)
        var tokenizer: Tokenizer? = nil
        if case .tokenizer(let t) = codec { tokenizer = t }
        guard gguf else {
            if saveDtype != "f32" { throw CLIError("--save-dtype \(saveDtype) needs --save-format gguf (safetensors saves are f32)") }
            return .safetensors(tokenizer: tokenizer)
        }
        return .gguf(GGUFSaveType(name: saveDtype) ?? .f32, tokenizer: tokenizer)
    }

    /// The loop's settings (transformers' TrainingArguments), for `examples` training examples.
    func trainingArguments(evalData: Bool) throws -> TrainingArguments {
        var a = TrainingArguments()
        a.outputDir = output
        a.numTrainEpochs = numTrainEpochs; a.maxSteps = maxSteps
        a.perDeviceTrainBatchSize = perDeviceTrainBatchSize; a.perDeviceEvalBatchSize = perDeviceEvalBatchSize
        a.gradientAccumulationSteps = gradientAccumulationSteps
        a.loggingSteps = loggingSteps
        a.loggingLastStep = true  // the command line has always logged the last step
        a.evalStrategy = evalData ? try IntervalStrategy(name: evalStrategy ?? "steps", field: "--eval-strategy") : .no
        a.evalSteps = evalSteps
        a.saveStrategy = try IntervalStrategy(name: saveStrategy ?? (saveSteps == nil ? "no" : "steps"), field: "--save-strategy")
        a.saveSteps = saveSteps ?? a.saveSteps
        a.saveTotalLimit = saveTotalLimit
        a.seed = UInt64(seed); a.dataSeed = dataSeed.map(UInt64.init)
        a.dataloaderDropLast = dataloaderDropLast
        a.resumeFromCheckpoint = resume
        a.reportTo = reportTo.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        try a.validate()
        return a
    }

    /// The optimizer and schedule fields; the schedule's length is the run's max_steps (with
    /// `worldSize` data-parallel ranks, whose global batch is per-device batch x ranks).
    func apply(to o: inout OptimizerConfig, args: TrainingArguments, examples: Int, worldSize: Int = 1) throws {
        if let learningRate { o.learningRate = learningRate }
        o.weightDecay = weightDecay; o.adamBeta1 = adamBeta1; o.adamBeta2 = adamBeta2; o.adamEpsilon = adamEpsilon
        o.maxGradNorm = maxGradNorm
        o.lrSchedulerType = try LRSchedulerType(name: lrSchedulerType)
        o.warmupSteps = warmupSteps; o.warmupRatio = warmupRatio
        o.maxSteps = try args.resolvedMaxSteps(examples: examples, worldSize: worldSize)
        o.gradientAccumulationSteps = gradientAccumulationSteps
        o.seed = UInt64(seed)
    }
}

/// Where the model comes from.
struct ModelOptions: ParsableArguments {
    @Option(help: "A Hugging Face model directory (config.json + safetensors) or a GGUF file.") var model: String?
    @Option(help: "A config.json for a freshly initialised model (random init from --seed).") var config: String?
    @Option(help: "The tokenizer for text data: a model directory with tokenizer.json or a .gguf file (default: the model's own).") var tokenizer: String?

    /// The model's text codec (its tokenizer, --tokenizer, or the byte tokenizer).
    func codec(vocabSize: Int) throws -> TextCodec {
        try TextCodec.forModel(path: model, tokenizerPath: tokenizer, vocabSize: vocabSize)
    }
}

/// True if `path` names a GGUF model (a .gguf file, or a directory holding one and no config.json).
func isGGUFModelPath(_ path: String) -> Bool {
    GGUFFile.isGGUF(path: path) || (!fileExists(joinPath(path, "config.json")) && LlamaModel.ggufFileInDirectory(path) != nil)
}

/// The final model's format.
/// The final save; `tokenizer` is the run's (as TRL's save_model writes the processing class).
enum FinalSave {
    case safetensors(tokenizer: Tokenizer?)
    case gguf(GGUFSaveType, tokenizer: Tokenizer?)

    var tokenizer: Tokenizer? {
        switch self {
        case .safetensors(let t), .gguf(_, let t): return t
        }
    }

    /// Where `write` puts the model: <output>/model (a directory) or <output>/model.gguf; a LoRA
    /// run's adapter goes to <output>/adapter (PEFT's files), and a gguf save is then the merged model.
    func path(output: String, lora: Bool = false) -> String {
        if case .gguf = self { return output + "/model.gguf" }
        return output + (lora ? "/adapter" : "/model")
    }

    /// Writes `model` below `output`: <output>/model (a directory, with the run's tokenizer files)
    /// or <output>/model.gguf (the tokenizer in its metadata). With a LoRA adapter: the adapter and
    /// the tokenizer files to <output>/adapter, and for gguf the model merged with it
    /// (merge_and_unload; the run is over), into an fp32 copy when the base is kept quantized.
    func write(_ trained: LlamaModel, output: String) throws -> String {
        var model = trained
        if model.adapter != nil {
            try model.saveAdapter(directory: output + "/adapter")
            try tokenizer?.savePretrained(directory: output + "/adapter")
            guard case .gguf = self else { return output + "/adapter" }
            if model.quantizedBase != nil { model = try model.dequantized() }
            try model.mergeAndUnload()
        }
        switch self {
        case .safetensors(let tokenizer):
            try model.save(directory: output + "/model", tokenizer: tokenizer)
            return output + "/model"
        case .gguf(let type, let tokenizer):
            try model.saveGGUF(path: output + "/model.gguf", type: type, metadata: tokenizer?.ggufMetadata())
            return output + "/model.gguf"
        }
    }
}
