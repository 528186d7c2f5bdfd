import DPO
import Foundation

/// Set by SIGINT (and, data parallel, SIGUSR1, which mpirun forwards to every rank: its own Ctrl-C
/// ends the job at once); the engine's loop checkpoints and stops at the next micro-batch boundary
/// (data parallel: at the next optimizer step, on every rank).
nonisolated(unsafe) var interrupted: sig_atomic_t = 0

/// How a command presents its run (the loop itself is configured by TrainingArguments).
struct RunOptions {
    var title: String
    /// How the final model is written.
    var finalSave = FinalSave.safetensors(tokenizer: nil)
    /// Metrics drawn in metrics.svg.
    var plotMetrics: [String] = ["loss"]
    /// Log-line metrics (besides loss).
    var logMetrics: [String] = []
}

/// `dpo sft`, `dpo train` and the demo: the engine's TrainingLoop, with a progress bar or log
/// lines, the --resume note, Ctrl-C (a checkpoint, exit 130), metrics.svg and the final model.
/// Data parallel (under mpirun, the trainer has the MPI communicator): rank 0 alone prints, logs
/// and writes; it also prints where the time went (DataParallel.swift).
final class TrainingRun<T: Trainer> {
    let loop: TrainingLoop<T>
    let options: RunOptions
    private let printer: RunPrinter
    /// Where the final model went (after `run` returned true).
    private(set) var savedModelPath = ""

    init(trainer: T, args: TrainingArguments, train: [T.Example], eval: [T.Example]?, options: RunOptions) throws {
        loop = try TrainingLoop(trainer: trainer, args: args, trainDataset: train, evalDataset: eval)
        self.options = options
        let given = trainer.configFields
        printer = RunPrinter(options: options, resume: args.resumeFromCheckpoint, given: given,
                             restored: { [unowned trainer] in trainer.configFields })
        loop.callbacks.append(DataParallel.isPrimary ? printer : StopOnSignal())
    }

    /// Trains to max_steps. Returns false when interrupted (a checkpoint was written).
    @discardableResult
    func run() throws -> Bool {
        if DataParallel.isPrimary { try makeDirectories(loop.args.outputDir) }  // a DPOError naming the path, e.g. when it is a file
        signal(SIGINT) { _ in interrupted = 1 }
        if DataParallel.communicator != nil { signal(SIGUSR1) { _ in interrupted = 1 } }
        defer { signal(SIGINT, SIG_DFL); signal(SIGUSR1, SIG_DFL) }
        let start = now(), initialStep = loop.trainer.globalStep
        let out = try loop.train()
        if let dir = out.interruptedCheckpoint {
            printer.progress?.log("\ninterrupted: checkpoint written to \(dir) (resume with --resume \(dir))")
            return false
        }
        if let mpi = DataParallel.communicator, mpi.rank == 0 {
            print(mpi.summary(steps: loop.trainer.globalStep - initialStep, seconds: now() - start))
        }
        savedModelPath = options.finalSave.path(output: loop.args.outputDir, lora: loop.trainer.model.adapter != nil)
        guard DataParallel.isPrimary else { return true }
        savedModelPath = try options.finalSave.write(loop.trainer.model, output: loop.args.outputDir)
        let svg = Plot.fromRecords(loop.state.logHistory, metrics: options.plotMetrics, title: options.title)
        try writeFileAtomically(loop.args.outputDir + "/metrics.svg", bytes: Array(svg.utf8))
        return true
    }
}

/// The stop of a rank that prints nothing (data parallel, rank > 0).
final class StopOnSignal: TrainerCallback {
    func shouldStop(state: TrainerState) -> Bool { interrupted != 0 }
}

/// The loop's callback for the terminal: progress bar and log lines, the note when --resume
/// replaces given options, Ctrl-C.
final class RunPrinter: TrainerCallback {
    let options: RunOptions, resume: String?, given: JSONObject, restored: () -> JSONObject
    private(set) var progress: Progress?

    init(options: RunOptions, resume: String?, given: JSONObject, restored: @escaping () -> JSONObject) {
        self.options = options; self.resume = resume; self.given = given; self.restored = restored
    }

    func onTrainBegin(state: TrainerState) {
        if resume != nil {
            let now = restored()
            let differing = now.keys.filter { now[$0] != given[$0] }
            if !differing.isEmpty {
                let list = differing.map { "\($0) \(JSON.serialize(now[$0]!, pretty: false)) (given \(given[$0].map { JSON.serialize($0, pretty: false) } ?? "none"))" }
                FileHandle.standardError.write("dpo: note: --resume continues with the checkpoint's training config, which differs from the options given: \(list.joined(separator: ", "))\n".data(using: .utf8)!)
            }
        }
        let p = Progress(title: options.title, total: state.maxSteps, startingAt: state.globalStep)
        if let resume { p.log("\(options.title): resumed at step \(state.globalStep) from \(resume)") }
        progress = p
    }

    func onStepEnd(state: TrainerState, metrics: [(name: String, value: Double)]) {
        let last = Dictionary(metrics.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        progress?.update(state.globalStep, describe(last))
    }

    func onLog(_ record: LogRecord, state: TrainerState) {
        guard let progress, let step = record["step"].map(Int.init) else { return }
        if record["eval_loss"] != nil {
            progress.log("\(options.title) step \(step) eval  \(describe(record, prefix: "eval_"))")
        } else if record["loss"] != nil, !progress.isTerminal {
            progress.log("\(options.title) step \(step)/\(state.maxSteps)  \(describe(record))")
        }
    }

    func shouldStop(state: TrainerState) -> Bool { interrupted != 0 }

    func describe(_ r: [String: Double], prefix: String = "") -> String {
        (["loss"] + options.logMetrics).compactMap { k in r[prefix + k].map { "\(prefix + k) \(String(format: "%.4f", $0))" } }
            .joined(separator: "  ")
    }
}

func jsonNumber(_ d: Double) -> String {
    guard d.isFinite else { return "null" }
    if d == d.rounded() && abs(d) < 1e15 { return String(Int(d)) }
    return "\(d)"
}
