import ArgumentParser
import DPO
import Foundation

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The embedded demo: SFT a byte-level Llama from scratch, then DPO it to prefer positive reviews.",
        discussion: """
        Everything is generated and checked by rules, so the result is reproducible and can be judged \
        without a reward model: the share of sampled continuations that are positive should rise from \
        the SFT reference's ~50% to >= 90%, while the continuations stay in the task's language.
        """)
    @Option(help: "A chat model's GGUF file (e.g. SmolLM2-135M-Instruct): the real demo, DPO of that model on its own answers for conciseness (see RealDemo.swift).")
    var model: String?
    @Option(help: "Run directory (default runs/demo, runs/demo-real with --model).") var output: String?
    @Flag(help: "A shorter run (used by the tests).") var quick = false
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Seed of data and initialisation.") var seed: Int = 0
    @Option(help: "DPO beta (default 2.0; with --model the real demo's).") var beta: Double?
    @Option(help: "DPO learning rate (default 1e-4; with --model the real demo's).") var learningRate: Double?
    @Option(help: "DPO steps (default 100; with --model the real demo's).") var dpoSteps: Int?
    @Option(help: "SFT steps (default 300, 150 with --quick; the real demo has no SFT phase).") var sftSteps: Int?
    @Option(help: "DPO loss type(s), comma-separated.") var lossType: String = "sigmoid"
    @Option(help: "RPO: weight of an added NLL term on the chosen completions (0 = plain DPO; default 1; with --model the real demo's).") var rpoAlpha: Double?
    @Option(help: "Sampling temperature of the generations (with --model also of the sampled training answers).") var temperature: Double = 0.7
    @Flag(help: "bf16 mixed precision in every phase (TRL's bf16=True: matrix products with bf16 inputs, fp32 accumulation).") var bf16 = false
    @Flag(help: "DPO with a LoRA adapter (all linear layers) on the frozen model (the SFT model; with --model the GGUF's), which is also the reference (adapter off): no copy of the weights.")
    var usePeft = false
    @Option(help: "lora_r with --use-peft.") var loraR: Int = 16
    @Option(help: "lora_alpha with --use-peft.") var loraAlpha: Double = 32
    @Option(help: "DPO learning rate with --use-peft (default 2e-3; with --model the real demo's, 1.5e-4, 2e-4 with --quick).") var loraLearningRate: Double?
    @Flag(help: "With --model and --use-peft: keep the GGUF's matrices quantized (LoRA on the quantized base).")
    var keepBaseQuantized = false

    struct Outcome {
        var heldOutAccuracy = 0.0, heldOutMargin = 0.0
        var referencePositive = 0.0, policyPositive = 0.0
        var referenceWellFormed = 0.0, policyWellFormed = 0.0
        var kl = 0.0
    }

    func run() throws {
        if let threads { Threads.setCount(threads) }
        if let model { return try runReal(model: model) }
        if keepBaseQuantized { throw ValidationError("--keep-base-quantized needs --model (a GGUF file) and --use-peft") }
        let output = self.output ?? "runs/demo", beta = self.beta ?? 2.0, learningRate = self.learningRate ?? 1e-4
        let rpoAlpha = self.rpoAlpha ?? 1.0
        let start = now()
        let s = UInt64(max(seed, 0))
        let sftSteps = self.sftSteps ?? (quick ? 150 : 300), dpoSteps = self.dpoSteps ?? 100, samples = 96
        print("""
        swift-dpo demo: preference optimisation you can check by rule.
          Task: prompts open a short review ("The pizza was"). SFT data continues them positively and
          negatively in equal measure; preference pairs prefer the positive continuation. Evaluation
          uses items never seen in training (\(ReviewTask.heldOutItems.prefix(4).joined(separator: ", ")), ...).
          Model: byte-level Llama (vocab 259), trained from scratch on \(Threads.count) threads\(bf16 ? ", bf16 mixed precision" : "").

        """)
        let config = ByteTokenizer.modelConfig(hiddenSize: 128, intermediateSize: 352, layers: 4, heads: 4, kvHeads: 2)
        let model = try LlamaModel.randomlyInitialized(config: config, seed: s + 1)

        // Phase 1: SFT.
        var sc = SFTConfig()
        sc.optimizer.learningRate = 3e-3
        sc.optimizer.lrSchedulerType = .cosine
        sc.optimizer.warmupSteps = 20
        sc.optimizer.maxSteps = sftSteps
        sc.optimizer.weightDecay = 0.01
        sc.bf16 = bf16
        let sft = try SFTTrainer(model: model, config: sc)
        let sftArgs = Demo.arguments(output: output + "/sft", batchSize: 32, maxSteps: sftSteps, seed: s, loggingSteps: 25, evalSteps: 50)
        var sftRun = RunOptions(title: "sft")
        sftRun.plotMetrics = ["loss", "mean_token_accuracy"]; sftRun.logMetrics = ["mean_token_accuracy"]
        print("Phase 1: SFT, \(sftSteps) steps of 32 examples")
        try TrainingRun(trainer: sft, args: sftArgs, train: ReviewTask.sftData(4000, seed: s + 10),
                        eval: ReviewTask.sftData(64, items: ReviewTask.heldOutItems, seed: s + 11), options: sftRun).run()

        // Phase 2: DPO against a frozen copy of the SFT model, or (LoRA) the SFT model itself
        // with the adapter off.
        let reference = usePeft ? model : try LlamaModel(config: config)
        if !usePeft { reference.parameters.copy(from: model.parameters) }
        let peft = usePeft ? LoraConfig(r: loraR, loraAlpha: loraAlpha, targetModules: LoraModule.allCases) : nil
        /// `body` with the reference: the model with its adapter off when LoRA trains.
        func asReference<R>(_ body: (LlamaModel) throws -> R) rethrows -> R {
            usePeft ? try model.withAdaptersDisabled { try body(model) } : try body(reference)
        }
        var dc = DPOConfig()
        dc.beta = beta
        try dc.set("loss_type", .array(lossType.split(separator: ",").map { .string(String($0)) }))
        if rpoAlpha > 0 {
            dc.lossType.append(.sft)
            dc.lossWeights = [Double](repeating: 1, count: dc.lossType.count - 1) + [rpoAlpha]
        }
        dc.optimizer.learningRate = usePeft ? loraLearningRate ?? 2e-3 : learningRate
        dc.optimizer.lrSchedulerType = .linear
        dc.optimizer.warmupSteps = 5
        dc.optimizer.maxSteps = dpoSteps
        dc.bf16 = bf16
        dc.optimizer.seed = s
        let dpo = try DPOTrainer(policy: model, reference: usePeft ? nil : reference, config: dc, peftConfig: peft)
        let heldOutPairs = ReviewTask.pairs(128, items: ReviewTask.heldOutItems, seed: s + 21)
        let before = try dpo.evaluate(heldOutPairs)
        let dpoArgs = Demo.arguments(output: output + "/dpo", batchSize: 16, maxSteps: dpoSteps, seed: s, loggingSteps: 10, evalSteps: 20)
        var dpoRun = RunOptions(title: "dpo")
        dpoRun.plotMetrics = ["loss", "rewards/margins", "rewards/accuracies"]
        dpoRun.logMetrics = ["rewards/accuracies", "rewards/margins"]
        print("\nPhase 2: DPO (beta \(dc.beta), \(dc.lossType.map(\.rawValue).joined(separator: "+")) loss), \(dpoSteps) steps of 16 pairs, reference = the SFT model" + (usePeft ? " (LoRA r \(loraR), alpha \(loraAlpha), all linear layers: the reference is the base with the adapter off)" : ""))
        try TrainingRun(trainer: dpo, args: dpoArgs, train: ReviewTask.pairs(2000, seed: s + 20),
                        eval: heldOutPairs, options: dpoRun).run()
        let after = try dpo.evaluate(heldOutPairs)

        // Evaluation on held-out prompts: sampled continuations of reference and policy.
        let prompts = ReviewTask.heldOutPrompts(samples, seed: s + 30)
        var g = GenerationConfig()
        g.maxNewTokens = 48; g.temperature = temperature; g.seed = s + 31
        let inputs = prompts.map(ReviewTask.encodePrompt)
        let refOut = try asReference { try $0.generate(inputs, config: g) }
        let polOut = try model.generate(inputs, config: g)
        var o = Outcome()
        o.heldOutAccuracy = after.rewardsAccuracies; o.heldOutMargin = after.rewardsMargins
        func rate(_ outs: [[Int32]], _ f: ([Int32]) -> Bool) -> Double { Double(outs.filter(f).count) / Double(outs.count) }
        o.referencePositive = rate(refOut) { ReviewTask.isPositive(ByteTokenizer.decode($0)) }
        o.policyPositive = rate(polOut) { ReviewTask.isPositive(ByteTokenizer.decode($0)) }
        o.referenceWellFormed = rate(refOut, ReviewTask.isWellFormed)
        o.policyWellFormed = rate(polOut, ReviewTask.isWellFormed)
        // KL(policy || reference) on the policy's own samples: mean of log pi(y|x) - log pi_ref(y|x).
        let items = zip(inputs, polOut).filter { !$0.1.isEmpty }.map { (prompt: $0.0, completion: $0.1) }
        let lp = try model.sequenceLogProbs(items), lr = try asReference { try $0.sequenceLogProbs(items) }
        o.kl = zip(lp, lr).map { $0 - $1 }.reduce(0, +) / Double(max(items.count, 1))

        func pct(_ x: Double) -> String { String(format: "%5.1f%%", 100 * x) }
        print("""

        Results on held-out prompts (items never seen in training)
                                             reference (SFT)   policy (DPO)
          held-out reward accuracy              \(String(format: "%5.2f", before.rewardsAccuracies))            \(String(format: "%5.2f", after.rewardsAccuracies))
          held-out reward margin                \(String(format: "%5.2f", before.rewardsMargins))            \(String(format: "%5.2f", after.rewardsMargins))
          positive continuations (sampled)     \(pct(o.referencePositive))           \(pct(o.policyPositive))
          well-formed continuations            \(pct(o.referenceWellFormed))           \(pct(o.policyWellFormed))
          KL(policy || reference), nats/sample        -            \(String(format: "%6.2f", o.kl))
          (\(samples) prompts, temperature \(temperature); reward accuracy and margin over \(heldOutPairs.count) held-out pairs;
           the reference is the SFT model, so its own rewards are 0 by definition)

        Side by side (same prompt, same sampling seed; two where the reference was not positive, two where it was):
        """)
        let negatives = prompts.indices.filter { !ReviewTask.isPositive(ByteTokenizer.decode(refOut[$0])) }
        let positives = prompts.indices.filter { ReviewTask.isPositive(ByteTokenizer.decode(refOut[$0])) }
        for i in Array(negatives.prefix(2)) + Array(positives.prefix(2)) {
            print("  prompt:    \(prompts[i].debugDescription)")
            print("  reference: \(ByteTokenizer.decode(refOut[i]).debugDescription)")
            print("  policy:    \(ByteTokenizer.decode(polOut[i]).debugDescription)\n")
        }
        let pass = o.policyPositive >= 0.9 && o.heldOutAccuracy >= 0.9 && o.policyWellFormed >= 0.9
        print("""
        Run directory \(output): sft/ and dpo/ each hold metrics.jsonl, metrics.svg and model/ (Hugging Face format)\(usePeft ? "; dpo/adapter/ is the LoRA adapter (PEFT's files)" : "").
        \(pass ? "PASS" : "FAIL"): positive rate \(pct(o.referencePositive)) -> \(pct(o.policyPositive)) (target >= 90%), held-out accuracy \(String(format: "%.2f", o.heldOutAccuracy)) (target >= 0.9), well-formed \(pct(o.policyWellFormed)).
        Demo time: \(Progress.clock(now() - start)).
        """)
        try writeSummary(o, before: before, after: after, seconds: now() - start, output: output)
        if !pass { throw ExitCode(1) }
    }

    /// A phase's loop: `maxSteps` steps of `batchSize` examples, evaluated every `evalSteps`
    /// (batches of `batchSize`), no checkpoints, metrics.jsonl in `output`.
    static func arguments(output: String, batchSize: Int, maxSteps: Int, seed: UInt64, loggingSteps: Int, evalSteps: Int) -> TrainingArguments {
        var a = TrainingArguments()
        a.outputDir = output
        a.perDeviceTrainBatchSize = batchSize; a.perDeviceEvalBatchSize = batchSize
        a.maxSteps = maxSteps; a.seed = seed
        a.loggingSteps = loggingSteps; a.loggingLastStep = true
        a.evalStrategy = .steps; a.evalSteps = evalSteps
        a.saveStrategy = .no
        return a
    }

    func writeSummary(_ o: Outcome, before: DPOMetrics, after: DPOMetrics, seconds: Double, output: String) throws {
        let fields: [(String, Double)] = [
            ("heldout_reward_accuracy_before", before.rewardsAccuracies), ("heldout_reward_accuracy", o.heldOutAccuracy),
            ("heldout_reward_margin", o.heldOutMargin), ("reference_positive_rate", o.referencePositive),
            ("policy_positive_rate", o.policyPositive), ("reference_well_formed_rate", o.referenceWellFormed),
            ("policy_well_formed_rate", o.policyWellFormed), ("kl_policy_reference", o.kl), ("seconds", seconds)]
        let text = "{" + fields.map { "\"\($0.0)\": \(jsonNumber($0.1))" }.joined(separator: ", ") + "}\n"
        try writeFileAtomically(output + "/summary.json", bytes: Array(text.utf8))
    }
}
