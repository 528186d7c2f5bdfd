import ArgumentParser
import DPO
import Foundation

/// `dpo demo --model FILE.gguf`: DPO of a real chat model (SmolLM2-135M-Instruct) on its own
/// answers, judged by a rule that needs no reward model (conciseness, `ConcisenessRule`).
///
/// 1. Sample several answers to each training instruction (RealDemoInstructions, chat-templated
///    with the model's template and generation prompt) and several to each held-out one.
/// 2. Pair them by the rule: a short complete answer (EOS within the limit) is chosen over one
///    cut off at the limit. The held-out answers give the held-out pairs.
/// 3. DPO against the frozen initial model through the engine's TrainingLoop.
/// 4. Sample the trained policy on the held-out instructions and compare it with the reference:
///    the rule's rate, mean length, reward accuracy and margin on the held-out pairs, the
///    log-ratio (KL) per answer, and fluency (the policy's answers scored by the reference).
struct RealDemo {
    /// The run's sizes, hyperparameters and targets.
    struct Plan {
        var trainInstructions = RealDemoInstructions.training.count
        var samplesPerInstruction = 8
        var maxPairsPerInstruction = 5
        var heldOutInstructions = RealDemoInstructions.heldOut.count
        var samplesPerHeldOut = 4
        /// The rule: EOS within this many tokens. Generation stops there too.
        var limit = 60
        var temperature = 0.7
        var steps = 20
        var batchSize = 8
        var beta = 0.1
        var learningRate = 1e-5
        var warmupSteps = 3
        /// The DPO loss types, plus TRL's "sft" term (RPO) weighted `rpoAlpha` when it is above 0.
        var lossType: [DPOLossType] = [.sigmoid]
        var rpoAlpha = 0.0
        /// bf16 mixed precision (TRL's bf16=True) for sampling, training and evaluation.
        var bf16 = false
        /// LoRA instead of full fine-tuning: the reference is the model with the adapter off (no
        /// copy); with `keepBaseQuantized` the GGUF's matrices stay quantized.
        var lora: LoraConfig? = nil
        var keepBaseQuantized = false
        /// The learning rate of a LoRA run (--use-peft): the adapter starts at zero and needs
        /// larger steps than the full model's.
        var loraLearningRate = 1.5e-4
        /// Targets: the rule's rate on held-out prompts rises by `minRise` and reaches `minRate`;
        /// the policy's answers' mean log-prob per token under the reference stays within
        /// `fluencyBound` nats of the reference's own answers'; the run ends within `maxSeconds`.
        var minRise = 0.30, minRate = 0.80, fluencyBound = 0.5
        var maxSeconds: Double? = 15 * 60


        static func full() -> Plan { Plan() }

        /// The shortened run of the tests: fewer instructions, answers and steps; lower bars.
        static func quick() -> Plan {
            var p = Plan()
            p.trainInstructions = 32; p.samplesPerInstruction = 4; p.maxPairsPerInstruction = 2
            p.heldOutInstructions = 16; p.samplesPerHeldOut = 4
            p.steps = 12; p.batchSize = 4; p.warmupSteps = 2
            p.learningRate = 1e-5
            p.loraLearningRate = 2e-4
            p.minRise = 0.15; p.minRate = 0.5
            p.maxSeconds = nil
            return p
        }
    }

    let modelPath: String
    let output: String
    let plan: Plan
    let seed: UInt64

    func run() throws {
        let start = now()
        let p = plan
        let policy = try LlamaModel.load(path: modelPath, keepBaseQuantized: p.keepBaseQuantized)
        let tokenizer = try Tokenizer.load(path: modelPath)
        guard tokenizer.chatTemplate != nil else { throw CLIError("\(modelPath): the tokenizer has no chat template (the real demo needs a chat model)") }
        guard let eos = tokenizer.eosTokenID else { throw CLIError("\(modelPath): the tokenizer has no EOS token") }
        if tokenizer.idCount > policy.config.vocabSize {
            throw CLIError("the tokenizer of \(modelPath) has token ids up to \(tokenizer.idCount - 1), beyond the model's vocab_size \(policy.config.vocabSize)")
        }
        // The reference: a frozen copy, or with LoRA the policy with its adapter off.
        let copy: LlamaModel? = p.lora == nil ? try LlamaModel(config: policy.config) : nil
        copy?.parameters.copy(from: policy.parameters)
        policy.bf16 = p.bf16; copy?.bf16 = p.bf16
        func withReference<T>(_ body: (LlamaModel) throws -> T) throws -> T {
            if let copy { return try body(copy) }
            return try policy.withAdaptersDisabled { try body(policy) }
        }
        let rule = ConcisenessRule(limit: p.limit, eos: eos, tokenizer: tokenizer)
        func chat(_ text: String) throws -> [Int32] {
            try tokenizer.chatTemplateIDs([ChatMessage(role: "user", content: text)], addGenerationPrompt: true)
        }
        let trainText = Array(RealDemoInstructions.training.prefix(p.trainInstructions))
        let heldText = Array(RealDemoInstructions.heldOut.prefix(p.heldOutInstructions))
        let trainPrompts = try trainText.map(chat), heldPrompts = try heldText.map(chat)
        print("""
        swift-dpo real demo: DPO of \(modelPath) on its own answers, judged by a rule.
          Rule: an answer is short and complete when it ends (EOS) within \(p.limit) tokens; DPO prefers
          such an answer over one cut off at \(p.limit) tokens. No reward model.
          Data: \(trainText.count) training instructions x \(p.samplesPerInstruction) sampled answers; \(heldText.count) held-out
          instructions x \(p.samplesPerHeldOut) for the evaluation (written for this project, Sources/dpo-cli/RealDemoInstructions.swift).
          Model: \(policy.parameterCount) parameters\(p.lora.map { ", LoRA r \($0.r) on all linear layers, reference = the model with the adapter off" } ?? ", reference = a frozen copy")\(policy.quantizedBase.map { String(format: ", the base kept quantized (%.1f MB)", Double($0.byteCount) / 1e6) } ?? ""); \(Threads.count) threads\(p.bf16 ? ", bf16 mixed precision" : "").

        """)

        // 1. Answers of the initial model (the reference): training and held-out instructions.
        var g = GenerationConfig()
        g.maxNewTokens = p.limit; g.temperature = p.temperature; g.eosTokenIds = [eos]
        var sampler = AnswerSampler(generation: g, chunk: 256)
        print("Phase 1: sampling the model's answers (temperature \(p.temperature), at most \(p.limit) tokens)")
        let trainAnswers = try withReference { try sampler.sample($0, prompts: trainPrompts, perPrompt: p.samplesPerInstruction, seed: seed &+ 100, label: "training instructions") }
        let refHeld = try withReference { try sampler.sample($0, prompts: heldPrompts, perPrompt: p.samplesPerHeldOut, seed: seed &+ 200, label: "held-out instructions") }
        let trainPairs = zip(trainPrompts, trainAnswers).flatMap { rule.pairs(prompt: $0.0, answers: $0.1, maxPairs: p.maxPairsPerInstruction) }
        let heldPairs = zip(heldPrompts, refHeld).flatMap { rule.pairs(prompt: $0.0, answers: $0.1, maxPairs: p.maxPairsPerInstruction) }
        let trainRate = Double(trainAnswers.joined().filter(rule.accepts).count) / Double(max(trainAnswers.joined().count, 1))
        let samplingSeconds = now() - start
        print(String(format: "  %d training pairs from %d instructions (%.1f%% of the answers are short and complete), %d held-out pairs; %.0f new tokens/s",
                     trainPairs.count, Set(trainPairs.map(\.promptIds)).count, 100 * trainRate, heldPairs.count, sampler.tokensPerSecond))
        if trainPairs.isEmpty || heldPairs.isEmpty {
            throw CLIError("the model's answers gave no \(trainPairs.isEmpty ? "training" : "held-out") pairs: none or all of them are short and complete")
        }

        // 2. DPO against the frozen reference.
        var dc = DPOConfig()
        dc.beta = p.beta
        dc.bf16 = p.bf16
        dc.lossType = p.lossType
        if p.rpoAlpha > 0 {
            dc.lossType.append(.sft)
            dc.lossWeights = [Double](repeating: 1, count: p.lossType.count) + [p.rpoAlpha]
        }
        dc.optimizer.learningRate = p.learningRate
        dc.optimizer.lrSchedulerType = .linear
        dc.optimizer.warmupSteps = p.warmupSteps
        dc.optimizer.maxSteps = p.steps
        dc.optimizer.seed = seed
        let dpo = try DPOTrainer(policy: policy, reference: copy, config: dc, peftConfig: p.lora)
        var args = Demo.arguments(output: output, batchSize: p.batchSize, maxSteps: p.steps, seed: seed,
                                  loggingSteps: max(1, p.steps / 10), evalSteps: p.steps)
        args.perDeviceEvalBatchSize = 16
        var runOptions = RunOptions(title: "dpo")
        runOptions.finalSave = .safetensors(tokenizer: tokenizer)
        runOptions.plotMetrics = ["loss", "rewards/margins", "rewards/accuracies"]
        runOptions.logMetrics = ["rewards/accuracies", "rewards/margins"]
        let trainStart = now()
        print("\nPhase 2: DPO (beta \(p.beta), \(dc.lossType.map(\.rawValue).joined(separator: "+")) loss, learning rate \(p.learningRate)), \(p.steps) steps of \(p.batchSize) pairs, reference = the initial model\(p.lora == nil ? "" : " (the adapter off)")")
        let training = try TrainingRun(trainer: dpo, args: args, train: trainPairs, eval: heldPairs, options: runOptions)
        // Before training the policy is the reference: its rewards are 0 (measured all the same).
        let before = try training.loop.evaluate()
        try training.run()
        // The loop evaluates after its last step.
        guard let after = training.loop.state.logHistory.last(where: { $0["eval_loss"] != nil }) else {
            throw CLIError("internal: the training loop did not evaluate the held-out pairs")
        }
        let trainingSeconds = now() - trainStart

        // 3. The trained policy on the held-out instructions, against the reference.
        let evalStart = now()
        print("\nPhase 3: evaluation on the \(heldText.count) held-out instructions")
        let polHeld = try sampler.sample(policy, prompts: heldPrompts, perPrompt: p.samplesPerHeldOut, seed: seed &+ 200, label: "policy, held-out instructions")
        let refAnswers = Array(refHeld.joined()), polAnswers = Array(polHeld.joined())
        // Each model's answers scored by the reference (fluency), the policy's also by the policy (KL).
        let refByRef = try withReference { try answerTokenLogProbs($0, prompts: heldPrompts, answers: refHeld).flatMap { $0 } }
        let polByRef = try withReference { try answerTokenLogProbs($0, prompts: heldPrompts, answers: polHeld).flatMap { $0 } }
        let polByPol = try answerTokenLogProbs(policy, prompts: heldPrompts, answers: polHeld).flatMap { $0 }
        let refStats = AnswerStats(answers: refAnswers, rule: rule, referenceLogProbs: refByRef)
        let polStats = AnswerStats(answers: polAnswers, rule: rule, referenceLogProbs: polByRef)
        // KL(policy || reference) per answer on the policy's own answers: mean of log pi - log pi_ref.
        var logRatio = 0.0
        for (lp, lr) in zip(polByPol, polByRef) { logRatio += lp.reduce(0, +) - lr.reduce(0, +) }
        let kl = logRatio / Double(max(polAnswers.count, 1))
        let evalSeconds = now() - evalStart

        // GGUF holds whole weights: with LoRA, an fp32 copy with the adapter merged.
        let whole = policy.adapter == nil ? policy : try policy.dequantized()
        if whole.adapter != nil { try whole.mergeAndUnload() }
        try whole.saveGGUF(path: output + "/model.gguf", type: .f16)
        let seconds = now() - start

        let report = RealDemoReport(
            plan: p, reference: refStats, policy: polStats, kl: kl,
            accuracyBefore: before["eval_rewards/accuracies"] ?? 0, accuracyAfter: after["eval_rewards/accuracies"] ?? 0,
            marginBefore: before["eval_rewards/margins"] ?? 0, marginAfter: after["eval_rewards/margins"] ?? 0,
            heldOutPairs: heldPairs.count, trainPairs: trainPairs.count, trainRate: trainRate,
            tokensPerSecond: sampler.tokensPerSecond, samplingSeconds: samplingSeconds,
            trainingSeconds: trainingSeconds, evaluationSeconds: evalSeconds, seconds: seconds)
        report.printTable(answers: p.samplesPerHeldOut)
        report.printSideBySide(prompts: heldText, perPrompt: p.samplesPerHeldOut, reference: refAnswers, policy: polAnswers,
                               rule: rule, tokenizer: tokenizer)
        try writeAnswers(prompts: heldText, perPrompt: p.samplesPerHeldOut, reference: refAnswers, policy: polAnswers,
                         rule: rule, tokenizer: tokenizer)
        print("Run directory \(output): summary.json, answers.jsonl (every held-out answer), metrics.jsonl, metrics.svg, \(p.lora == nil ? "model/ (Hugging Face format)" : "adapter/ (PEFT's files)"), model.gguf (f16\(p.lora == nil ? "" : ", the adapter merged")).")
        print(report.verdictLine)
        try writeFileAtomically(output + "/summary.json", bytes: Array(JSON.serialize(.object(report.summary), pretty: true).utf8) + [10])
        if !report.passed { throw ExitCode(1) }
    }
}

extension RealDemo {
    /// answers.jsonl: one line per held-out answer pair (same prompt, same sampling seed): the
    /// instruction, each model's answer text, token count and the rule's verdict.
    func writeAnswers(prompts: [String], perPrompt: Int, reference: [[Int32]], policy: [[Int32]],
                      rule: ConcisenessRule, tokenizer: Tokenizer) throws {
        var text = ""
        for i in reference.indices {
            var o = JSONObject()
            o["instruction"] = .string(prompts[i / perPrompt])
            for (name, ids) in [("reference", reference[i]), ("policy", policy[i])] {
                o[name] = .string((try? tokenizer.decode(ids, skipSpecialTokens: true)) ?? "")
                o[name + "_tokens"] = .number(Double(ids.count))
                o[name + "_short_and_complete"] = .bool(rule.accepts(ids))
            }
            text += JSON.serialize(.object(o), pretty: false) + "\n"
        }
        try writeFileAtomically(output + "/answers.jsonl", bytes: Array(text.utf8))
    }
}

extension Demo {
    /// `dpo demo --model FILE`: the real demo with the plan of --quick or the full run, the given
    /// hyperparameters replacing the plan's.
    func runReal(model: String) throws {
        var plan = quick ? RealDemo.Plan.quick() : RealDemo.Plan.full()
        if let beta { plan.beta = beta }
        if let learningRate { plan.learningRate = learningRate }
        if let dpoSteps { plan.steps = dpoSteps }
        if let rpoAlpha { plan.rpoAlpha = rpoAlpha }
        plan.temperature = temperature
        plan.bf16 = bf16
        if sftSteps != nil { throw ValidationError("--sft-steps: the real demo (--model) has no SFT phase") }
        if usePeft {
            plan.lora = LoraConfig(r: loraR, loraAlpha: loraAlpha, targetModules: LoraModule.allCases)
            plan.learningRate = loraLearningRate ?? learningRate ?? plan.loraLearningRate
            plan.keepBaseQuantized = keepBaseQuantized
        } else if keepBaseQuantized {
            throw ValidationError("--keep-base-quantized needs --use-peft (a quantized base trains only a LoRA adapter)")
        }
        plan.lossType = try lossType.split(separator: ",").map { name in
            guard let t = DPOLossType(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--loss-type: unknown loss type '\(name)'")
            }
            return t
        }
        if seed < 0 { throw ValidationError("--seed must be >= 0, got \(seed)") }
        try RealDemo(modelPath: model, output: output ?? "runs/demo-real", plan: plan, seed: UInt64(seed)).run()
    }
}
