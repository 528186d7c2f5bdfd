import DPO
import Foundation

/// What the run loop needs of a trainer: the DPO and SFT trainers behind one face.
protocol RunnableTrainer: AnyObject {
    associatedtype Example
    var model: LlamaModel { get }
    var globalStep: Int { get }
    var pendingMicroBatches: Int { get }
    func trainStep(_ batch: [Example]) throws -> (metrics: [(name: String, value: Double)], stepped: Bool)
    func evaluateBatch(_ batch: [Example]) throws -> [(name: String, value: Double)]
    func saveCheckpoint(directory: String) throws
    func loadCheckpoint(directory: String) throws
    /// The training config by TRL's names (to tell what --resume replaced).
    var configFields: JSONObject { get }
}

extension DPOTrainer: RunnableTrainer {
    var model: LlamaModel { policy }
    var configFields: JSONObject { config.jsonObject }
    func trainStep(_ batch: [PreferencePair]) throws -> (metrics: [(name: String, value: Double)], stepped: Bool) {
        let r = try step(batch)
        return (r.metrics.named(), r.optimizerStepped)
    }
    func evaluateBatch(_ batch: [PreferencePair]) throws -> [(name: String, value: Double)] {
        try evaluate(batch).named(prefix: "eval_")
    }
}

extension SFTTrainer: RunnableTrainer {
    var configFields: JSONObject {
        var c = JSONObject()
        config.optimizer.write(into: &c)
        c["max_length"] = config.maxLength.map { .number(Double($0)) } ?? .null
        return c
    }
    func trainStep(_ batch: [SFTExample]) throws -> (metrics: [(name: String, value: Double)], stepped: Bool) {
        let r = try step(batch)
        return (r.metrics.named(), r.optimizerStepped)
    }
    func evaluateBatch(_ batch: [SFTExample]) throws -> [(name: String, value: Double)] {
        try evaluate(batch).named(prefix: "eval_")
    }
}

/// Set by SIGINT; the loop checkpoints and stops at the next micro-batch boundary.
nonisolated(unsafe) var interrupted: sig_atomic_t = 0

struct RunOptions {
    var output: String
    var title: String
    var batchSize = 8
    var maxSteps = 100
    var gradientAccumulationSteps = 1
    var seed: UInt64 = 42
    var loggingSteps = 10
    var evalSteps: Int? = nil
    var saveSteps: Int? = nil
    var resume: String? = nil
    /// How the final model is written.
    var finalSave = FinalSave.safetensors
    /// Metrics drawn in metrics.svg.
    var plotMetrics: [String] = ["loss"]
    /// Log-line metrics (besides loss).
    var logMetrics: [String] = []
}

/// The training loop of `dpo sft`, `dpo train` and the demo: deterministic batches (a seeded
/// shuffle per epoch, so a resumed run continues with the same batches), progress, metrics.jsonl,
/// evaluation, periodic and Ctrl-C checkpoints, metrics.svg and the final model.
final class TrainingRun<T: RunnableTrainer> {
    let trainer: T, train: [T.Example], eval: [T.Example]?, options: RunOptions
    private(set) var records: [[String: Double]] = []
    /// Where the final model went (after `run` returned true).
    private(set) var savedModelPath = ""
    /// metrics.jsonl's path and its text so far: rewritten whole (atomically) at each record, so
    /// the file is never half a line, and written through the engine's path handling (the bytes
    /// of a path as given, UTF-8 or not).
    private var metricsPath = "", metricsText: [UInt8] = []

    init(trainer: T, train: [T.Example], eval: [T.Example]?, options: RunOptions) {
        self.trainer = trainer; self.train = train; self.eval = eval; self.options = options
    }

    /// Batch number `index` of the run (micro-batches count across epochs).
    func batch(_ index: Int) -> [T.Example] {
        let perEpoch = max(1, (train.count + options.batchSize - 1) / options.batchSize)
        let epoch = index / perEpoch, k = index % perEpoch
        var order = Array(train.indices)
        var rng = Xoshiro256(seed: options.seed &+ UInt64(epoch) &* 0x9E37_79B9)
        order.shuffle(using: &rng)
        let lo = k * options.batchSize, hi = min(lo + options.batchSize, train.count)
        return order[lo..<hi].map { train[$0] }
    }

    func evaluate() throws -> [String: Double]? {
        guard let eval, !eval.isEmpty else { return nil }
        var sums: [String: Double] = [:], weight = 0.0
        var i = 0
        while i < eval.count {
            let b = Array(eval[i..<min(i + options.batchSize, eval.count)])
            for (k, v) in try trainer.evaluateBatch(b) { sums[k, default: 0] += v * Double(b.count) }
            weight += Double(b.count)
            i += options.batchSize
        }
        return sums.mapValues { $0 / weight }
    }

    func record(_ r: [String: Double]) throws {
        records.append(r)
        let keys = ["step"] + r.keys.filter { $0 != "step" }.sorted()
        let line = "{" + keys.map { "\"\($0)\": \(jsonNumber(r[$0]!))" }.joined(separator: ", ") + "}\n"
        metricsText += Array(line.utf8)
        try writeFileAtomically(metricsPath, bytes: metricsText)
    }

    func describe(_ r: [String: Double], prefix: String = "") -> String {
        (["loss"] + options.logMetrics).compactMap { k in r[prefix + k].map { "\(prefix + k) \(String(format: "%.4f", $0))" } }
            .joined(separator: "  ")
    }

    /// Runs to `maxSteps` optimizer steps. Returns false when interrupted (a checkpoint was written).
    @discardableResult
    func run() throws -> Bool {
        try makeDirectories(options.output)  // a DPOError naming the path, e.g. when it is a file
        metricsPath = options.output + "/metrics.jsonl"
        var micro = 0
        if let resume = options.resume {
            let given = trainer.configFields
            try trainer.loadCheckpoint(directory: resume)
            let restored = trainer.configFields
            let differing = restored.keys.filter { restored[$0] != given[$0] }
            if !differing.isEmpty {
                let list = differing.map { "\($0) \(JSON.serialize(restored[$0]!, pretty: false)) (given \(given[$0].map { JSON.serialize($0, pretty: false) } ?? "none"))" }
                FileHandle.standardError.write("dpo: note: --resume continues with the checkpoint's training config, which differs from the options given: \(list.joined(separator: ", "))\n".data(using: .utf8)!)
            }
            micro = trainer.globalStep * options.gradientAccumulationSteps + trainer.pendingMicroBatches
            if let old = try? readFile(metricsPath, limit: FileSizeLimit.dataset) {
                for line in old.split(separator: UInt8(ascii: "\n")) {
                    if let o = try? JSON.parse(Array(line)).object {
                        var r: [String: Double] = [:]
                        for k in o.keys { if let d = o[k]?.double { r[k] = d } }
                        if (r["step"] ?? 0) <= Double(trainer.globalStep) { records.append(r) }
                    }
                }
            }
        }
        // metrics.jsonl holds exactly the records of this run (rewritten on resume).
        metricsText = []
        let kept = records; records = []
        for r in kept { try record(r) }

        signal(SIGINT) { _ in interrupted = 1 }
        defer { signal(SIGINT, SIG_DFL) }
        let progress = Progress(title: options.title, total: options.maxSteps, startingAt: trainer.globalStep)
        if options.resume != nil { progress.log("\(options.title): resumed at step \(trainer.globalStep) from \(options.resume!)") }
        var window: [[(name: String, value: Double)]] = []
        var last: [String: Double] = [:]
        while trainer.globalStep < options.maxSteps {
            if interrupted != 0 {
                let dir = options.output + "/checkpoint-\(trainer.globalStep)"
                try trainer.saveCheckpoint(directory: dir)
                progress.log("\ninterrupted: checkpoint written to \(dir) (resume with --resume \(dir))")
                return false
            }
            let (metrics, stepped) = try trainer.trainStep(batch(micro))
            micro += 1
            guard stepped else { continue }
            window.append(metrics)
            let step = trainer.globalStep
            last = Dictionary(metrics.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
            progress.update(step, describe(last))
            if step % options.loggingSteps == 0 || step == options.maxSteps {
                // Logged values are means over the optimizer steps since the last log, as TRL logs them.
                var r: [String: Double] = ["step": Double(step)]
                for (k, _) in metrics { r[k] = window.map { $0.first { $0.name == k }?.value ?? 0 }.reduce(0, +) / Double(window.count) }
                r["learning_rate"] = last["learning_rate"]; r["num_tokens"] = last["num_tokens"]
                window = []
                try record(r)
                if !progress.isTerminal { progress.log("\(options.title) step \(step)/\(options.maxSteps)  \(describe(r))") }
            }
            if let every = options.evalSteps, step % every == 0 || step == options.maxSteps, var e = try evaluate() {
                e["step"] = Double(step)
                try record(e)
                progress.log("\(options.title) step \(step) eval  \(describe(e, prefix: "eval_"))")
            }
            if let every = options.saveSteps, step % every == 0 {
                try trainer.saveCheckpoint(directory: options.output + "/checkpoint-\(step)")
            }
        }
        savedModelPath = try options.finalSave.write(trainer.model, output: options.output)
        let svg = Plot.fromRecords(records, metrics: options.plotMetrics, title: options.title)
        try writeFileAtomically(options.output + "/metrics.svg", bytes: Array(svg.utf8))
        return true
    }
}

func jsonNumber(_ d: Double) -> String {
    guard d.isFinite else { return "null" }
    if d == d.rounded() && abs(d) < 1e15 { return String(Int(d)) }
    return "\(d)"
}
