import ArgumentParser
import DPO
import Foundation

struct SFT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft",
        abstract: "Supervised fine-tuning on (prompt, completion) data: the first phase of the pipeline.",
        discussion: """
        Data: a JSONL (or JSON array) file in TRL's SFT formats, tokenized by the model's tokenizer \
        and chat template (a GGUF file's, tokenizer.json in the model directory, or --tokenizer) \
        exactly as TRL's SFTTrainer prepares it: {"text": ...}, {"messages": [{"role", "content"}, \
        ...]}, {"prompt", "completion"} as strings or conversations, or token ids (input_ids with \
        completion_mask, or prompt_ids/completion_ids). Models sized for the byte tokenizer \
        (vocab_size 259, the demo's) take prompt/completion text or *_ids.
        """)
    @OptionGroup var source: ModelOptions
    @Option(help: "Training data (JSONL).") var data: String
    @Option(help: "Evaluation data (JSONL), evaluated every --eval-steps.") var evalData: String?
    @Option(help: "max_length: longest prompt+completion (0 = no limit).") var maxLength: Int = 1024
    @Option(help: "truncation_mode of rows longer than max_length: keep_start or keep_end.") var truncationMode: String = "keep_start"
    @Option(help: "completion_only_loss: true or false (default: TRL's, on for prompt-completion data).") var completionOnlyLoss: Bool?
    @Flag(help: "assistant_only_loss: learn only the assistant's turns (needs a template with {% generation %} blocks).") var assistantOnlyLoss = false
    @Option(help: "chat_template_path: a Jinja chat template file used instead of the tokenizer's.") var chatTemplatePath: String?
    @Option(help: "dataset_text_field: the column of language-modeling rows.") var datasetTextField: String = "text"
    @OptionGroup var lora: LoraOptions
    @OptionGroup var training: TrainingOptions

    func run() throws {
        if let t = training.threads { Threads.setCount(t) }
        let model = try loadOrCreateModel(model: source.model, config: source.config, seed: UInt64(training.seed),
                                          keepBaseQuantized: lora.keepBaseQuantized)
        let codec = try source.codec(vocabSize: model.config.vocabSize)
        var c = SFTConfig()
        c.maxLength = maxLength == 0 ? nil : maxLength
        c.bf16 = training.bf16
        var data = DataConfig()
        data.maxLength = c.maxLength
        data.truncationMode = try TruncationMode(name: truncationMode)
        data.completionOnlyLoss = completionOnlyLoss
        data.assistantOnlyLoss = assistantOnlyLoss
        data.chatTemplatePath = chatTemplatePath
        data.datasetTextField = datasetTextField
        let trainFile = try loadSFTExamples(self.data, vocabSize: model.config.vocabSize, codec: codec, data: data)
        let evalFile = try evalData.map { try loadSFTExamples($0, vocabSize: model.config.vocabSize, codec: codec, data: data) }
        let train = trainFile.rows, eval = evalFile?.rows
        let args = try training.trainingArguments(evalData: eval != nil)
        try training.apply(to: &c.optimizer, args: args, examples: train.count, worldSize: DataParallel.size)
        try lora.loadAdapter(into: model)
        let trainer = try SFTTrainer(model: model, config: c, peftConfig: try lora.config(base: source.model))
        if let mpi = DataParallel.communicator { try trainer.setCommunicator(mpi) }
        try trainFile.check(trainer.check)
        try evalFile?.check(trainer.check)
        var opts = RunOptions(title: "sft")
        opts.plotMetrics = ["loss", "mean_token_accuracy"]
        opts.logMetrics = ["mean_token_accuracy"]
        opts.finalSave = try training.finalSave(modelPath: source.model, codec: codec)
        say("sft: \(train.count) examples, \(c.optimizer.maxSteps) steps, model with \(model.parameterCount) parameters\(loraNote(model)) -> \(training.output)")
        let run = try TrainingRun(trainer: trainer, args: args, train: train, eval: eval, options: opts)
        if try !run.run() { throw ExitCode(130) }
        say("sft: done; model saved to \(run.savedModelPath)")
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "DPO training on preference data.",
        discussion: """
        Data: a JSONL (or JSON array) file in TRL's preference formats, tokenized by the model's \
        tokenizer and chat template exactly as TRL's DPOTrainer prepares it: prompt/chosen/rejected \
        as strings or conversations (lists of {"role", "content"}), only chosen/rejected (the shared \
        start is the prompt), or prompt_ids/chosen_ids/rejected_ids. The byte tokenizer's models \
        (vocab_size 259) take prompt/chosen/rejected text or *_ids. The reference is --reference, \
        or a snapshot of the initial policy.
        """)
    @OptionGroup var source: ModelOptions
    @Option(help: "Reference model directory or GGUF file (default: a snapshot of the initial policy).") var reference: String?
    @Option(help: "Training data (JSONL).") var data: String
    @Option(help: "Evaluation data (JSONL), evaluated every --eval-steps.") var evalData: String?
    @OptionGroup var dpo: DPOOptions
    @OptionGroup var lora: LoraOptions
    @OptionGroup var training: TrainingOptions

    func run() throws {
        if let t = training.threads { Threads.setCount(t) }
        let policy = try loadOrCreateModel(model: source.model, config: source.config, seed: UInt64(training.seed),
                                          keepBaseQuantized: lora.keepBaseQuantized)
        let ref = try reference.map { try LlamaModel.load(path: $0) }
        let codec = try source.codec(vocabSize: policy.config.vocabSize)
        var c = DPOConfig()
        try dpo.apply(to: &c)
        c.bf16 = training.bf16
        let trainFile = try loadPreferencePairs(data, vocabSize: policy.config.vocabSize, codec: codec, data: c.dataConfig)
        let evalFile = try evalData.map { try loadPreferencePairs($0, vocabSize: policy.config.vocabSize, codec: codec, data: c.dataConfig) }
        var train = trainFile.rows, eval = evalFile?.rows
        let args = try training.trainingArguments(evalData: eval != nil)
        try training.apply(to: &c.optimizer, args: args, examples: train.count, worldSize: DataParallel.size)
        try c.validate()
        try lora.loadAdapter(into: policy)
        var trainer = try DPOTrainer(policy: policy, reference: ref, config: c, peftConfig: try lora.config(base: source.model))
        try trainFile.check(trainer.check)
        try evalFile?.check(trainer.check)
        if c.precomputeRefLogProbs {
            // Reference log-probs once up front (with the reference, or the initial policy), then
            // a trainer that holds no reference model.
            say("train: precomputing reference log-probs of \(train.count + (eval?.count ?? 0)) pairs")
            train = try attachReferenceLogProbs(train, trainer, batch: training.perDeviceTrainBatchSize)
            eval = try eval.map { try attachReferenceLogProbs($0, trainer, batch: training.perDeviceTrainBatchSize) }
            trainer = try DPOTrainer(policy: policy, reference: nil, config: c)  // trains the adapter, if any
        }
        if let mpi = DataParallel.communicator { try trainer.setCommunicator(mpi) }
        var opts = RunOptions(title: "dpo")
        opts.plotMetrics = ["loss", "rewards/margins", "rewards/accuracies"]
        opts.logMetrics = ["rewards/accuracies", "rewards/margins"]
        opts.finalSave = try training.finalSave(modelPath: source.model, codec: codec)
        say("train: \(train.count) pairs, \(c.optimizer.maxSteps) steps, beta \(c.beta), loss \(c.lossType.map(\.rawValue).joined(separator: "+")), reference \(trainer.referenceKind.rawValue)\(loraNote(policy)) -> \(training.output)")
        let run = try TrainingRun(trainer: trainer, args: args, train: train, eval: eval, options: opts)
        if try !run.run() { throw ExitCode(130) }
        say("train: done; model saved to \(run.savedModelPath)")
    }
}

/// ", LoRA r 16 on q_proj, v_proj (1.2M trained parameters)" for a model with an adapter (and the
/// quantized base's size when kept quantized), else "".
func loraNote(_ model: LlamaModel) -> String {
    guard let a = model.adapter else { return "" }
    let base = model.quantizedBase.map { String(format: ", the base kept quantized (%.1f MB)", Double($0.byteCount) / 1e6) } ?? ""
    return ", LoRA r \(a.config.r) on \(a.config.modules.map(\.name).joined(separator: ", ")) (\(a.parameterCount) trained parameters)\(base)"
}

/// Every pair with its reference log-probs, computed in batches of `batch` pairs. Data parallel,
/// the ranks share the batches (rank r computes every N-th one from the r-th) and sum the results.
func attachReferenceLogProbs(_ pairs: [PreferencePair], _ trainer: DPOTrainer, batch: Int) throws -> [PreferencePair] {
    let mpi = DataParallel.communicator
    var logps = [Double](repeating: 0, count: 2 * pairs.count)  // chosen, rejected of each pair
    for (index, i) in stride(from: 0, to: pairs.count, by: batch).enumerated() where index % (mpi?.size ?? 1) == (mpi?.rank ?? 0) {
        let hi = min(i + batch, pairs.count)
        for (k, r) in try trainer.precomputeReferenceLogProbs(Array(pairs[i..<hi])).enumerated() {
            logps[2 * (i + k)] = r.chosen; logps[2 * (i + k) + 1] = r.rejected
        }
    }
    try mpi?.allreduceSum(&logps)
    var out = pairs
    for i in out.indices { out[i].refChosenLogps = logps[2 * i]; out[i].refRejectedLogps = logps[2 * i + 1] }
    return out
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DPO metrics (eval_ names) of a model on a preference file.")
    @Option(help: "Model directory or GGUF file.") var model: String
    @Option(help: "Reference model directory or GGUF file (default: the model itself, so rewards are 0).") var reference: String?
    @Option(help: "The tokenizer for text data (default: the model's own).") var tokenizer: String?
    @Option(help: "Preference data (JSONL).") var data: String
    @Option(help: "Pairs per batch.") var batchSize: Int = 8
    @OptionGroup var dpo: DPOOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be >= 1") }
        let policy = try LlamaModel.load(path: model)
        let ref = try reference.map { try LlamaModel.load(path: $0) }
        let codec = try TextCodec.forModel(path: model, tokenizerPath: tokenizer, vocabSize: policy.config.vocabSize)
        var c = DPOConfig()
        try dpo.apply(to: &c)
        let file = try loadPreferencePairs(data, vocabSize: policy.config.vocabSize, codec: codec, data: c.dataConfig)
        let pairs = file.rows
        c.precomputeRefLogProbs = false
        try c.validate()
        let trainer = try DPOTrainer(policy: policy, reference: ref, config: c)
        try file.check(trainer.check)
        var args = TrainingArguments()
        args.perDeviceEvalBatchSize = batchSize
        args.reportTo = ["none"]
        let m = try TrainingLoop(trainer: trainer, args: args, trainDataset: [], evalDataset: pairs).evaluate()
        if json {
            print("{" + m.keys.sorted().map { "\"\($0)\": \(jsonNumber(m[$0]!))" }.joined(separator: ", ") + "}")
        } else {
            print("\(pairs.count) pairs from \(data)")
            for k in m.keys.sorted() { print(String(format: "  %-26@ %.6g", k as NSString, m[k]!)) }
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Completions for prompts; with --reference, policy and reference side by side.",
        discussion: """
        A text prompt is a user message in the model's chat template (with the generation prompt) \
        when its tokenizer has one, unless --no-chat-template; otherwise the tokenizer's BOS + text.
        """)
    @Option(help: "Model directory or GGUF file.") var model: String
    @Option(help: "Reference model directory or GGUF file to compare with.") var reference: String?
    @Option(help: "The tokenizer (default: the model's own).") var tokenizer: String?
    @Option(name: .customLong("prompt"), help: "A prompt (text); repeatable.") var prompts: [String] = []
    @Option(help: "JSONL file of prompts (prompt text or prompt_ids).") var promptsFile: String?
    @Flag(help: "Encode text prompts as they are, without the chat template.") var noChatTemplate = false
    @Option(help: "max_new_tokens.") var maxNewTokens: Int = 64
    @Option(help: "temperature (0 = greedy).") var temperature: Double = 0
    @Option(help: "top_k (0 = off).") var topK: Int = 0
    @Option(help: "top_p (1 = off).") var topP: Double = 1
    @Option(help: "seed.") var seed: Int = 0

    func run() throws {
        let policy = try LlamaModel.load(path: model)
        let ref = try reference.map { try LlamaModel.load(path: $0) }
        let codec = try TextCodec.forModel(path: model, tokenizerPath: tokenizer, vocabSize: policy.config.vocabSize)
        let encode = noChatTemplate ? codec.encodePrompt : codec.encodeChatPrompt
        var inputs: [[Int32]] = try prompts.map(encode)
        var text = true
        if let promptsFile {
            for (line, o) in try readJSONL(promptsFile) {
                if o["prompt_ids"] != nil { text = false }
                inputs.append(try tokens(o, "prompt", line: line, path: promptsFile, vocabSize: policy.config.vocabSize, encode: encode))
            }
        }
        if inputs.isEmpty { throw CLIError("give --prompt TEXT or --prompts-file FILE") }
        var g = GenerationConfig()
        g.maxNewTokens = maxNewTokens; g.temperature = temperature; g.topK = topK; g.topP = topP
        g.seed = UInt64(max(seed, 0))
        let out = try policy.generate(inputs, config: g)
        let refOut = try ref?.generate(inputs, config: g)
        func show(_ ids: [Int32]) -> String {
            if text, let s = codec.decode(ids) { return s.debugDescription }
            return ids.map(String.init).joined(separator: " ")
        }
        for i in inputs.indices {
            print("prompt:    \(show(inputs[i]))")
            print("policy:    \(show(out[i]))")
            if let refOut { print("reference: \(show(refOut[i]))") }
            print("")
        }
    }
}
