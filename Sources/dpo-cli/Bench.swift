import ArgumentParser
import DPO
import Foundation

/// Named model shapes for benchmarks.
enum BenchShape: String, ExpressibleByArgument, CaseIterable {
    case tiny
    case smollm2_135m = "smollm2-135m"

    var config: LlamaConfig {
        switch self {
        case .tiny:
            return LlamaConfig(vocabSize: 4096, hiddenSize: 256, intermediateSize: 704, numHiddenLayers: 4,
                               numAttentionHeads: 8, numKeyValueHeads: 4, tieWordEmbeddings: true)
        case .smollm2_135m:
            var c = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                numAttentionHeads: 9, numKeyValueHeads: 3, tieWordEmbeddings: true)
            c.ropeTheta = 100_000
            c.rmsNormEps = 1e-5
            c.maxPositionEmbeddings = 8192
            return c
        }
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Peak resident set size of this process in bytes (VmHWM).
func peakRSS() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

/// OpenBLAS sgemm rate in GFLOP/s on an m x k by k x n product (median of a few runs).
func measureSgemm(m: Int, n: Int, k: Int, runs: Int = 5) -> Double {
    var rng = Xoshiro256(seed: 1)
    let a = (0..<(m * k)).map { _ in Float(rng.nextUniform() - 0.5) }
    let b = (0..<(k * n)).map { _ in Float(rng.nextUniform() - 0.5) }
    var c = [Float](repeating: 0, count: m * n)
    var times: [Double] = []
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            c.withUnsafeMutableBufferPointer { c in
                benchmarkSgemm(m: m, n: n, k: k, a: a.baseAddress!, b: b.baseAddress!, c: c.baseAddress!)
                for _ in 0..<runs {
                    let t0 = now()
                    benchmarkSgemm(m: m, n: n, k: k, a: a.baseAddress!, b: b.baseAddress!, c: c.baseAddress!)
                    times.append(now() - t0)
                }
            }
        }
    }
    return 2 * Double(m) * Double(n) * Double(k) / median(times) / 1e9
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark DPO steps (or the model's forward/backward) on a named shape.",
        discussion: """
        Reports the median time of --steps runs after --warmup, tokens/s, the GEMM FLOPs one step \
        executes and the GFLOP/s achieved, the OpenBLAS sgemm rate measured in the same run and the \
        ratio of the two, and the peak resident memory of the process.
        """)

    @Option(help: "Model shape: \(BenchShape.allCases.map(\.rawValue).joined(separator: ", ")).")
    var shape: BenchShape = .tiny
    @Option(help: "What to time: step (a DPO step with a held reference), model (forward, forward+backward), generate (greedy KV-cached decoding: --pairs prompts of --prompt-length, --completion-length new tokens) or gemm (bf16 products against OpenBLAS sgemm: 2048^3 and the smollm2-135m step's products, --steps runs each).")
    var mode: String = "step"
    @Option(help: "Preference pairs per step.") var pairs: Int = 2
    @Option(help: "Prompt tokens per pair.") var promptLength: Int = 128
    @Option(help: "Tokens of each completion (chosen and rejected).") var completionLength: Int = 128
    @Option(help: "Reference: model (a held copy) or precomputed (log-probs with the batch).") var reference: String = "model"
    @Option(help: "Packing in step mode: shared (the prompt once, head on completion rows) or plain (a padded TRL batch's work).")
    var packing: String = "shared"
    @Option(help: "Tokens per batch in model mode.") var tokens: Int = 1024
    @Option(help: "Sequence length in model mode (tokens are split into sequences of this length).") var sequenceLength: Int = 256
    @Option(help: "Timed runs.") var steps: Int = 5
    @Option(help: "Untimed warm-up runs.") var warmup: Int = 1
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Flag(help: "bf16 mixed precision (the model's matrix products with bf16 inputs, fp32 accumulation).") var bf16 = false
    @Flag(help: "Step mode: a LoRA DPO step (fresh adapter, reference = the base with the adapter off), then the full fine-tuning step of the same run (held reference) in a child process, and their ratios of time and peak memory.")
    var lora = false
    @Option(help: "lora_r with --lora.") var loraR: Int = 16
    @Option(help: "lora_target_modules with --lora (comma-separated or all-linear).") var loraTargetModules: String = "all-linear"
    @Flag(help: "With --lora: skip the full step's child process.") var noCompare = false
    @Option(help: "A model (Hugging Face directory or GGUF file) whose weights and shape replace --shape's random ones.")
    var model: String?
    @Flag(help: "With --lora and a GGUF --model: keep the base quantized (keep_base_quantized); the full step's child loads it as fp32.")
    var keepBaseQuantized = false

    func validate() throws {
        guard ["step", "model", "generate", "gemm"].contains(mode) else {
            throw ValidationError("--mode must be step, model, generate or gemm, got \(mode)")
        }
        guard ["model", "precomputed"].contains(reference) else { throw ValidationError("--reference must be model or precomputed") }
        guard PreferencePacking(rawValue: packing) != nil else { throw ValidationError("--packing must be shared or plain") }
        for (name, v) in [("pairs", pairs), ("prompt-length", promptLength), ("completion-length", completionLength),
                          ("tokens", tokens), ("sequence-length", sequenceLength), ("steps", steps)] where v < 1 {
            throw ValidationError("--\(name) must be >= 1, got \(v)")
        }
        if warmup < 0 { throw ValidationError("--warmup must be >= 0") }
        if lora && mode != "step" { throw ValidationError("--lora needs --mode step") }
        if keepBaseQuantized && (!lora || model == nil) { throw ValidationError("--keep-base-quantized needs --lora and a GGUF --model") }
        if model != nil && mode == "gemm" { throw ValidationError("--model does not apply to --mode gemm") }
    }

    func run() throws {
        Threads.setCount(threads ?? Threads.count)
        if mode == "gemm" { return runGemm() }
        GemmCounter.isEnabled = true  // the counters are opt-in; only benchmarks read them
        defer { GemmCounter.isEnabled = false }
        let policy = try model.map { try LlamaModel.load(path: $0, keepBaseQuantized: keepBaseQuantized) }
            ?? LlamaModel.randomlyInitialized(config: shape.config, seed: 1)
        let config = policy.config
        var rng = Xoshiro256(seed: 7)
        func randomTokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) } }
        var result: [(String, Double)] = []
        var timesFB: [Double] = [], timesF: [Double] = []
        var flopsPerRun = 0.0, tokensPerRun = 0, gemmSeconds: [Double] = []
        policy.bf16 = bf16

        if mode == "generate" {
            let prompts = (0..<pairs).map { _ in randomTokens(promptLength) }
            var g = GenerationConfig()
            g.maxNewTokens = completionLength
            g.eosTokenIds = []
            for i in 0..<(warmup + steps) {
                GemmCounter.reset()
                let t0 = now()
                _ = try policy.generate(prompts, config: g)
                if i >= warmup { timesFB.append(now() - t0); gemmSeconds.append(GemmCounter.seconds) }
                flopsPerRun = GemmCounter.flops
            }
            // New tokens per run (the prompts' prefill is included in the time).
            tokensPerRun = pairs * completionLength
        } else if mode == "model" {
            var seqs: [[Int32]] = []
            var left = tokens
            while left > 0 { let n = min(sequenceLength, left); seqs.append(randomTokens(n)); left -= n }
            let packed = PackedTokens(sequences: seqs)
            var rows: [Int32] = [], labels: [Int32] = [], start = 0
            for s in seqs {
                for t in 0..<(s.count - 1) { rows.append(Int32(start + t)); labels.append(s[t + 1]) }
                start += s.count
            }
            let head = HeadQuery(rows: rows, labels: labels)
            let dl = [Float](repeating: -1 / Float(rows.count), count: rows.count)
            for i in 0..<(warmup + steps) {
                let t0 = now()
                GemmCounter.reset()
                _ = try policy.forward(packed, head: head, keepActivations: true)
                let t1 = now()
                let forwardFlops = GemmCounter.flops
                try policy.backward(dlogp: dl)
                let t2 = now()
                if i >= warmup { timesF.append(t1 - t0); timesFB.append(t2 - t0); gemmSeconds.append(GemmCounter.seconds) }
                flopsPerRun = GemmCounter.flops
                result = [("forward_flops", forwardFlops)]
            }
            tokensPerRun = tokens
        } else {
            var c = DPOConfig()
            c.maxLength = nil
            c.optimizer.learningRate = 1e-7
            c.precomputeRefLogProbs = reference == "precomputed"
            c.bf16 = bf16  // the trainer sets LlamaModel.bf16 of policy and reference
            // LoRA holds no reference model: the reference is the policy with its adapter off.
            let ref = reference == "model" && !lora
                ? try model.map { try LlamaModel.load(path: $0) } ?? LlamaModel.randomlyInitialized(config: config, seed: 2) : nil
            var peft: LoraConfig? = nil
            if lora {
                peft = LoraConfig(r: loraR, loraAlpha: Double(2 * loraR),
                                  targetModules: try LoraConfig.targetModules(loraTargetModules.split(separator: ",").map(String.init)))
            }
            let trainer = try DPOTrainer(policy: policy, reference: ref, config: c, peftConfig: peft)
            if let a = policy.adapter { result.append(("lora_parameters", Double(a.parameterCount))) }
            trainer.packing = PreferencePacking(rawValue: packing)!
            var batch = (0..<pairs).map { _ in
                PreferencePair(promptIds: randomTokens(promptLength), chosenIds: randomTokens(completionLength),
                               rejectedIds: randomTokens(completionLength))
            }
            if reference == "precomputed" {
                for (i, r) in try trainer.precomputeReferenceLogProbs(batch).enumerated() {
                    batch[i].refChosenLogps = r.chosen; batch[i].refRejectedLogps = r.rejected
                }
            }
            for i in 0..<(warmup + steps) {
                GemmCounter.reset()
                let t0 = now()
                _ = try trainer.step(batch)
                let t1 = now()
                if i >= warmup { timesFB.append(t1 - t0); gemmSeconds.append(GemmCounter.seconds) }
                flopsPerRun = GemmCounter.flops
            }
            // TRL's num_tokens per step: the non-pad tokens of the chosen and rejected rows.
            tokensPerRun = pairs * (2 * promptLength + 2 * completionLength)
        }
        let t = median(timesFB)
        let achieved = flopsPerRun / t / 1e9
        let sgemmRate = measureSgemm(m: 1024, n: 1536, k: 576)
        let quantizedMiB: [(String, Double)] = policy.quantizedBase.map { [("quantized_base_mib", Double($0.byteCount) / 1048576)] } ?? []
        result = [("threads", Double(Threads.count)), ("parameters", Double(policy.parameterCount)),
                  ("bf16", bf16 ? 1 : 0)] + quantizedMiB + result.filter { $0.0 == "lora_parameters" || $0.0 == "forward_flops" }
            + (mode == "model" ? [("forward_seconds", median(timesF))] : [])
            + [("step_seconds", t), ("gemm_seconds", median(gemmSeconds)), ("tokens_per_step", Double(tokensPerRun)),
               ("tokens_per_second", Double(tokensPerRun) / t), ("gemm_flops_per_step", flopsPerRun),
               ("achieved_gflops", achieved), ("sgemm_gflops", sgemmRate), ("ratio_to_sgemm", achieved / sgemmRate),
               ("peak_rss_mib", Double(peakRSS()) / 1048576)]
        if lora && !noCompare {
            // The full step in a child process: peak memory is per process.
            let full = try fullStepInChild()
            let step = t, peak = Double(peakRSS()) / 1048576
            result += [("full_step_seconds", full.step), ("full_peak_rss_mib", full.peak),
                       ("step_time_ratio", step / full.step), ("peak_rss_ratio", peak / full.peak)]
        }
        if json {
            var o: [String] = ["\"shape\": " + JSON.serialize(.string(model ?? shape.rawValue), pretty: false), "\"mode\": \"\(mode)\"", "\"reference\": \"\(reference)\"",
                               "\"packing\": \"\(packing)\"", "\"lora\": \(lora)"]
            o += result.map { "\"\($0.0)\": \($0.1)" }
            print("{" + o.joined(separator: ", ") + "}")
        } else {
            print("\(model.map { "model \($0)" + (keepBaseQuantized ? " (base kept quantized)" : "") } ?? "shape \(shape.rawValue)"), mode \(mode)" + (mode == "step" ? ", \(pairs) pairs x (\(promptLength) prompt + 2 x \(completionLength) completion), reference \(lora ? "the base (adapter off)" : reference), packing \(packing)" : ", \(tokens) tokens in sequences of \(sequenceLength)")
                  + (lora ? ", LoRA r \(loraR) on \(loraTargetModules)" + (noCompare ? "" : "; full_* = the full fine-tuning step (held reference model) in a child process") : ""))
            for (k, v) in result { print(String(format: "  %-20@ %.4g", k as NSString, v)) }
        }
    }
}

extension Bench {
    /// Runs this benchmark without --lora (the full fine-tuning step) in a child process and
    /// returns its median step time and peak resident memory.
    func fullStepInChild() throws -> (step: Double, peak: Double) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var args = ["bench", "--shape", shape.rawValue, "--mode", "step", "--pairs", "\(pairs)",
                    "--prompt-length", "\(promptLength)", "--completion-length", "\(completionLength)",
                    "--reference", reference, "--packing", packing, "--steps", "\(steps)", "--warmup", "\(warmup)",
                    "--threads", "\(Threads.count)", "--json"]
        if bf16 { args.append("--bf16") }
        if let model { args += ["--model", model] }
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let o = try? JSON.parse(Array(data)).object,
              let step = o["step_seconds"]?.double, let peak = o["peak_rss_mib"]?.double else {
            throw CLIError("bench --lora: the full step's child process failed (status \(p.terminationStatus))")
        }
        return (step, peak)
    }
}

/// One product of `dpo bench --mode gemm`: C[m, n] = op(A) op(B).
struct GemmCase {
    var name: String
    var transA = false, transB = false
    var m: Int, n: Int, k: Int
}

extension Bench {
    /// The products timed by --mode gemm: a large square one, then the smollm2-135m plain step's
    /// (1024 rows: 2 pairs x 2 sequences of 256): the linear layers forward (x W^T), backward
    /// (dX = dY W, dW = dY^T X), and the LM head's 128-row chunks over the 49152 vocabulary.
    static var gemmCases: [GemmCase] {
        [GemmCase(name: "square", m: 2048, n: 2048, k: 2048),
         GemmCase(name: "q/o proj fwd", transB: true, m: 1024, n: 576, k: 576),
         GemmCase(name: "k/v proj fwd", transB: true, m: 1024, n: 192, k: 576),
         GemmCase(name: "gate/up fwd", transB: true, m: 1024, n: 1536, k: 576),
         GemmCase(name: "down fwd", transB: true, m: 1024, n: 576, k: 1536),
         GemmCase(name: "gate/up dX", m: 1024, n: 576, k: 1536),
         GemmCase(name: "down dX", m: 1024, n: 1536, k: 576),
         GemmCase(name: "gate/up dW", transA: true, m: 1536, n: 576, k: 1024),
         GemmCase(name: "down dW", transA: true, m: 576, n: 1536, k: 1024),
         GemmCase(name: "head fwd", transB: true, m: 128, n: 49152, k: 576),
         GemmCase(name: "head dX", m: 128, n: 576, k: 49152),
         GemmCase(name: "head dW", transA: true, m: 49152, n: 576, k: 128)]
    }

    /// bf16 products against OpenBLAS sgemm on the same operands, the two alternating run by run
    /// (median of --steps runs after --warmup), and the estimated bf16 peak of all threads
    /// (BF16Gemm.measurePeak, the best of 3 probes before and 3 after).
    func runGemm() {
        func peak() -> Double { (0..<3).map { _ in BF16Gemm.measurePeak() }.max() ?? 0 }
        var peakRate = peak()
        var rows: [(GemmCase, Double, Double)] = []
        var rng = Xoshiro256(seed: 1)
        for g in Self.gemmCases {
            let a = (0..<(g.m * g.k)).map { _ in Float(rng.nextUniform() - 0.5) }
            let b = (0..<(g.k * g.n)).map { _ in Float(rng.nextUniform() - 0.5) }
            var c = [Float](repeating: 0, count: g.m * g.n)
            var bf16Times: [Double] = [], sgemmTimes: [Double] = []
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        for i in 0..<(warmup + steps) {
                            for bf16 in (i % 2 == 0 ? [true, false] : [false, true]) {
                                let t0 = now()
                                benchmarkProduct(bf16: bf16, transA: g.transA, transB: g.transB, m: g.m, n: g.n, k: g.k,
                                                 a: a.baseAddress!, b: b.baseAddress!, c: c.baseAddress!)
                                let t = now() - t0
                                if i >= warmup { if bf16 { bf16Times.append(t) } else { sgemmTimes.append(t) } }
                            }
                        }
                    }
                }
            }
            let flops = 2 * Double(g.m) * Double(g.n) * Double(g.k)
            rows.append((g, flops / median(bf16Times) / 1e9, flops / median(sgemmTimes) / 1e9))
        }
        peakRate = max(peakRate, peak())
        let peakG = peakRate / 1e9
        let path = BF16Gemm.usesNativeKernel ? "native AVX512-BF16 kernel" : "fallback (bf16-rounded copies + sgemm)"
        if json {
            let items = rows.map { g, bf, sg in
                "{\"name\": \"\(g.name)\", \"op\": \"\(g.transA ? "T" : "N")\(g.transB ? "T" : "N")\", \"m\": \(g.m), "
                    + "\"n\": \(g.n), \"k\": \(g.k), \"bf16_gflops\": \(bf), \"sgemm_gflops\": \(sg), "
                    + "\"ratio_to_sgemm\": \(bf / sg), \"fraction_of_bf16_peak\": \(peakG > 0 ? bf / peakG : 0)}"
            }
            print("{\"mode\": \"gemm\", \"threads\": \(Threads.count), \"native\": \(BF16Gemm.usesNativeKernel), "
                  + "\"bf16_peak_gflops\": \(peakG), \"products\": [\(items.joined(separator: ", "))]}")
            return
        }
        print("bf16 products (\(path)) vs OpenBLAS sgemm, \(Threads.count) threads, median of \(steps) runs")
        print(String(format: "estimated bf16 peak: %.0f GFLOP/s (vdpbf16ps throughput on every thread)", peakG))
        print("product        op      m      n      k   bf16 GFLOP/s  sgemm GFLOP/s   ratio  of peak")
        for (g, bf, sg) in rows {
            let op = (g.transA ? "T" : "N") + (g.transB ? "T" : "N")
            let name = g.name.padding(toLength: 14, withPad: " ", startingAt: 0)
            print(name + " " + op + String(format: " %6d %6d %6d %14.0f %14.0f %6.2fx %7.0f%%",
                                           g.m, g.n, g.k, bf, sg, bf / sg, peakG > 0 ? 100 * bf / peakG : 0))
        }
    }
}
