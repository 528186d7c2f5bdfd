import Foundation
import XCTest
@testable import DPO

/// A trainer whose examples are integers and whose "training" records what it is given: the
/// loop's batching, epochs, logging and evaluation checked exactly, without a model. Step s (from
/// 1) reports loss s, grad_norm 10 s, learning_rate s / 100, num_tokens 100 s and sq s^2.
final class RecordingTrainer: Trainer {
    let model: LlamaModel
    var globalStep = 0, pendingMicroBatches = 0
    var optimizerConfig = OptimizerConfig()
    var configFields: JSONObject { [:] }
    var batches: [[Int]] = [], steps: [(micro: Int, batches: Int)] = [], evaluated: [[Int]] = []

    init() throws { model = try LlamaModel(config: TestModels.qwen2) }

    func trainStep(_ batch: [Int]) throws -> TrainStepOutput {
        batches.append(batch)
        pendingMicroBatches += 1
        if pendingMicroBatches < optimizerConfig.gradientAccumulationSteps { return TrainStepOutput(metrics: [], optimizerStepped: false) }
        return TrainStepOutput(metrics: finishStep(), optimizerStepped: true)
    }
    func applyOptimizerAtEpochEnd() throws -> [(name: String, value: Double)] { finishStep() }
    private func finishStep() -> [(name: String, value: Double)] {
        steps.append((batches.count, pendingMicroBatches))
        globalStep += 1; pendingMicroBatches = 0
        let s = Double(globalStep)
        return [("loss", s), ("sq", s * s), ("grad_norm", 10 * s), ("learning_rate", s / 100), ("num_tokens", 100 * s)]
    }
    func evaluationMetrics(_ batch: [Int]) throws -> [(name: String, value: Double)] {
        evaluated.append(batch)
        return [("eval_loss", Double(batch.reduce(0, +)) / Double(batch.count))]
    }
    func configureSchedule(maxSteps: Int, gradientAccumulationSteps: Int) throws {
        optimizerConfig.maxSteps = maxSteps; optimizerConfig.gradientAccumulationSteps = gradientAccumulationSteps
    }
    func saveCheckpoint(directory: String, extraState: JSONObject) throws { throw DPOError.internal("not used") }
    func loadCheckpoint(directory: String) throws -> JSONObject { throw DPOError.internal("not used") }
    func check(_ example: Int) throws {
        if example < 0 { throw DPOError.invalidArgument("example 0: \(example) is negative") }
    }
}

final class TrainingLoopTests: XCTestCase {
    func arguments(_ dir: String, _ configure: (inout TrainingArguments) -> Void) -> TrainingArguments {
        var a = TrainingArguments()
        a.outputDir = dir
        a.reportTo = ["none"]
        a.saveStrategy = .no
        configure(&a)
        return a
    }

    /// Epoch e's order as TrainingArguments documents it, computed here independently.
    func documentedOrder(_ n: Int, seed: UInt64, epoch: Int) -> [Int] {
        var order = Array(0..<n)
        var rng = Xoshiro256(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9)
        order.shuffle(using: &rng)
        return order
    }

    func dpoTrainer(accumulation: Int, maxSteps: Int) throws -> DPOTrainer {
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        c.optimizer.warmupSteps = 1
        c.optimizer.gradientAccumulationSteps = accumulation
        c.optimizer.maxSteps = maxSteps
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5)
        return try DPOTrainer(policy: policy, reference: nil, config: c)
    }

    // MARK: - train() is step(batch) in a documented order

    func testTrainEqualsStepDrivenSteps() throws {
        let pairs = PreferenceTask.pairs(10, seed: 3)
        let args = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 3; $0.gradientAccumulationSteps = 2; $0.numTrainEpochs = 2; $0.seed = 9
        }
        let looped = try dpoTrainer(accumulation: 2, maxSteps: 4)
        let loop = try TrainingLoop(trainer: looped, args: args, trainDataset: pairs)
        var stepLosses: [Double] = []
        final class Steps: TrainerCallback {
            var losses: [Double] = []
            func onStepEnd(state: TrainerState, metrics: [(name: String, value: Double)]) { losses.append(metrics.first { $0.name == "loss" }!.value) }
        }
        let steps = Steps()
        loop.callbacks.append(steps)
        let out = try loop.train()
        // 10 examples in batches of 3: 4 micro-batches (3, 3, 3, 1) per epoch, 2 steps per epoch, 2 epochs.
        XCTAssertEqual(out.globalStep, 4)

        let driven = try dpoTrainer(accumulation: 2, maxSteps: 4)
        for epoch in 0..<2 {
            let order = documentedOrder(10, seed: 9, epoch: epoch)
            for lo in stride(from: 0, to: 10, by: 3) {
                let r = try driven.step(order[lo..<min(lo + 3, 10)].map { pairs[$0] })
                if r.optimizerStepped { stepLosses.append(r.metrics.loss) }
            }
        }
        XCTAssertEqual(driven.globalStep, 4)
        XCTAssertEqual(looped.policy.parameters.array, driven.policy.parameters.array, "bit-identical weights")
        XCTAssertEqual(steps.losses, stepLosses)
        XCTAssertEqual(out.trainingLoss, stepLosses.reduce(0, +) / 4)
        XCTAssertEqual(out.metrics["train_loss"], out.trainingLoss)
        XCTAssertEqual(out.metrics["epoch"], 2)
        XCTAssertNil(out.interruptedCheckpoint)
    }

    /// An epoch whose micro-batches do not fill the last accumulation steps with the mean of those
    /// it has (transformers): with one micro-batch per epoch and gradient_accumulation_steps 2,
    /// every step is that micro-batch alone, as without accumulation.
    func testShortLastStepOfAnEpochUsesTheMeanGradient() throws {
        let pairs = PreferenceTask.pairs(3, seed: 4)
        let args = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 4; $0.gradientAccumulationSteps = 2; $0.maxSteps = 3; $0.shuffle = false; $0.loggingSteps = 1
        }
        let looped = try dpoTrainer(accumulation: 2, maxSteps: 3)
        let loop = try TrainingLoop(trainer: looped, args: args, trainDataset: pairs)
        _ = try loop.train()
        let plain = try dpoTrainer(accumulation: 1, maxSteps: 3)
        var norms: [Double] = []
        for _ in 0..<3 {
            let r = try plain.step(pairs)
            XCTAssertTrue(r.optimizerStepped)
            norms.append(r.metrics.gradNorm!)
        }
        XCTAssertEqual(looped.globalStep, 3)
        XCTAssertEqual(loop.state.logHistory.prefix(3).map { $0["grad_norm"]! }, norms, "the norm of the mean gradient")
        XCTAssertEqual(looped.policy.parameters.array, plain.policy.parameters.array)
    }

    // MARK: - Epochs, shuffling, drop_last

    func testEveryExampleOncePerEpochInTheSeededOrder() throws {
        let t = try RecordingTrainer()
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 4; $0.numTrainEpochs = 3; $0.seed = 1; $0.dataSeed = 77 }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<10))
        let out = try loop.train()
        XCTAssertEqual(out.globalStep, 9)  // 3 batches (4, 4, 2) per epoch, 3 epochs
        XCTAssertEqual(t.batches.map(\.count), [4, 4, 2, 4, 4, 2, 4, 4, 2])
        for epoch in 0..<3 {
            let seen = t.batches[(3 * epoch)..<(3 * epoch + 3)].flatMap { $0 }
            XCTAssertEqual(seen, documentedOrder(10, seed: 77, epoch: epoch), "data_seed orders epoch \(epoch)")
            XCTAssertEqual(seen.sorted(), Array(0..<10))
        }
        XCTAssertNotEqual(t.batches[0...2].flatMap { $0 }, t.batches[3...5].flatMap { $0 }, "each epoch has its own order")
        XCTAssertEqual(t.optimizerConfig.maxSteps, 9, "the schedule's length is the run's")
    }

    func testDropLastAndNoShuffle() throws {
        let t = try RecordingTrainer()
        let args = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 4; $0.numTrainEpochs = 2; $0.dataloaderDropLast = true; $0.shuffle = false
        }
        let out = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<10)).train()
        XCTAssertEqual(out.globalStep, 4)
        XCTAssertEqual(t.batches, [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7]])
    }

    func testAccumulationGroupsEndAtEpochBoundaries() throws {
        let t = try RecordingTrainer()
        // 5 micro-batches per epoch, 2 per step: steps of 2, 2 and 1 micro-batches each epoch.
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 2; $0.gradientAccumulationSteps = 2; $0.maxSteps = 5 }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<10))
        _ = try loop.train()
        XCTAssertEqual(t.steps.map(\.batches), [2, 2, 1, 2, 2])
        XCTAssertEqual(loop.state.logHistory.last?["epoch"], 1 + 4.0 / 5)
    }

    // MARK: - Logging

    func testLogRecordsAreTheWindowMeansAsTRLLogsThem() throws {
        let t = try RecordingTrainer()
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 1; $0.maxSteps = 7; $0.loggingSteps = 3; $0.shuffle = false }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<20))
        _ = try loop.train()
        let h = loop.state.logHistory
        XCTAssertEqual(h.count, 3, "steps 3 and 6, then the summary")
        XCTAssertEqual(h[0], ["loss": 2, "sq": 14.0 / 3, "grad_norm": 30, "learning_rate": 0.03, "num_tokens": 300, "epoch": 3.0 / 20, "step": 3])
        XCTAssertEqual(h[1], ["loss": 5, "sq": 77.0 / 3, "grad_norm": 60, "learning_rate": 0.06, "num_tokens": 600, "epoch": 6.0 / 20, "step": 6])
        XCTAssertEqual(h[2]["train_loss"], 4, "mean loss of the 7 steps")
        XCTAssertEqual(h[2]["step"], 7)
        XCTAssertNotNil(h[2]["train_runtime"])

        let t2 = try RecordingTrainer()
        let both = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 1; $0.maxSteps = 7; $0.loggingSteps = 3; $0.loggingFirstStep = true; $0.loggingLastStep = true
        }
        let loop2 = try TrainingLoop(trainer: t2, args: both, trainDataset: Array(0..<20))
        _ = try loop2.train()
        let h2 = loop2.state.logHistory.filter { $0["loss"] != nil }
        XCTAssertEqual(h2.map { $0["step"]! }, [1, 3, 6, 7])
        XCTAssertEqual(h2.map { $0["loss"]! }, [1, 2.5, 5, 7], "each the mean since the previous record")
    }

    func testJSONLSinkHoldsTheLogHistory() throws {
        let dir = try makeScratchDirectory()
        let t = try RecordingTrainer()
        let args = arguments(dir) { $0.perDeviceTrainBatchSize = 2; $0.maxSteps = 4; $0.loggingSteps = 2; $0.reportTo = ["jsonl"] }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<8))
        _ = try loop.train()
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, loop.state.logHistory.count)
        for (line, record) in zip(lines, loop.state.logHistory) {
            let o = try JSON.parse(String(line)).object!
            XCTAssertEqual(o.keys.first, "step")
            XCTAssertEqual(Set(o.keys), Set(record.keys))
            for k in o.keys { XCTAssertEqual(o[k]!.double, record[k]) }
        }
    }

    // MARK: - Evaluation

    func testEvalStrategySteps() throws {
        let t = try RecordingTrainer()
        let args = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 1; $0.maxSteps = 7; $0.loggingSteps = 100
            $0.evalStrategy = .steps; $0.evalSteps = 3; $0.perDeviceEvalBatchSize = 2
        }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<20), evalDataset: [1, 2, 3, 10, 20])
        _ = try loop.train()
        let evals = loop.state.logHistory.filter { $0["eval_loss"] != nil }
        XCTAssertEqual(evals.map { $0["step"]! }, [3, 6, 7], "every eval_steps and at the last step")
        XCTAssertEqual(evals[0]["eval_loss"], 36.0 / 5, "the mean over the examples")
        XCTAssertEqual(t.evaluated.prefix(3).map { $0 }, [[1, 2], [3, 10], [20]], "eval batches in order")
    }

    func testEvalStrategyEpochAndEvaluate() throws {
        let t = try RecordingTrainer()
        let args = arguments(try makeScratchDirectory()) {
            $0.perDeviceTrainBatchSize = 3; $0.maxSteps = 5; $0.evalStrategy = .epoch
        }
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: Array(0..<6), evalDataset: [4])
        _ = try loop.train()
        let evals = loop.state.logHistory.filter { $0["eval_loss"] != nil }
        XCTAssertEqual(evals.map { $0["step"]! }, [2, 4, 5], "after each epoch and at the end of the last, partial one")
        XCTAssertEqual(evals.map { $0["epoch"]! }, [1, 2, 2.5])
        let m = try loop.evaluate()
        XCTAssertEqual(m, ["eval_loss": 4])
        XCTAssertEqual(loop.state.logHistory.last?["eval_loss"], 4)
    }

    // MARK: - Checkpoints

    func testSaveTotalLimitDeletesOnlyOldSwiftDPOCheckpoints() throws {
        let dir = try makeScratchDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/checkpoint-0/notes", withIntermediateDirectories: true)
        try "keep".write(toFile: dir + "/checkpoint-0/notes/a.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir + "/checkpoint-best", withIntermediateDirectories: true)
        let args = arguments(dir) {
            $0.perDeviceTrainBatchSize = 2; $0.maxSteps = 4; $0.saveStrategy = .steps; $0.saveSteps = 1; $0.saveTotalLimit = 2
        }
        final class Saves: TrainerCallback {
            var paths: [String] = []
            func onSave(checkpoint: String, state: TrainerState) { paths.append(checkpoint) }
        }
        let saves = Saves()
        let loop = try TrainingLoop(trainer: try dpoTrainer(accumulation: 1, maxSteps: 4), args: args,
                                    trainDataset: PreferenceTask.pairs(4, seed: 1), callbacks: [saves])
        _ = try loop.train()
        XCTAssertEqual(saves.paths.map { ($0 as NSString).lastPathComponent }, ["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-4"])
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") }.sorted()
        XCTAssertEqual(left, ["checkpoint-0", "checkpoint-3", "checkpoint-4", "checkpoint-best"])
        XCTAssertEqual(try String(contentsOfFile: dir + "/checkpoint-0/notes/a.txt", encoding: .utf8), "keep")
    }

    func testResumeGivesBitIdenticalWeightsAndLogHistory() throws {
        let pairs = PreferenceTask.pairs(7, seed: 8)
        func args(_ dir: String) -> TrainingArguments {
            arguments(dir) {
                $0.perDeviceTrainBatchSize = 2; $0.gradientAccumulationSteps = 2; $0.maxSteps = 6; $0.loggingSteps = 2
                $0.saveStrategy = .steps; $0.saveSteps = 3; $0.evalStrategy = .steps; $0.evalSteps = 4
            }
        }
        let fullDir = try makeScratchDirectory()
        let full = try dpoTrainer(accumulation: 2, maxSteps: 6)
        let fullLoop = try TrainingLoop(trainer: full, args: args(fullDir), trainDataset: pairs, evalDataset: Array(pairs.prefix(3)))
        _ = try fullLoop.train()

        // Step 3 is mid-window (logging every 2) and mid-epoch (4 micro-batches, 2 steps per epoch).
        let resumedDir = try makeScratchDirectory()
        let resumed = try dpoTrainer(accumulation: 2, maxSteps: 6)
        let resumedLoop = try TrainingLoop(trainer: resumed, args: args(resumedDir), trainDataset: pairs, evalDataset: Array(pairs.prefix(3)))
        let out = try resumedLoop.train(resumeFromCheckpoint: fullDir + "/checkpoint-3")
        XCTAssertEqual(out.globalStep, 6)
        XCTAssertEqual(full.policy.parameters.array, resumed.policy.parameters.array, "bit-identical weights")
        XCTAssertEqual(Array(fullLoop.state.logHistory.dropLast()), Array(resumedLoop.state.logHistory.dropLast()),
                       "the same log history (the summary covers only the resumed steps)")
        XCTAssertEqual(resumedLoop.state.logHistory.last?["step"], 6)
    }

    func testStopCallbackCheckpointsMidAccumulationAndResumes() throws {
        let pairs = PreferenceTask.pairs(9, seed: 2)
        let fullDir = try makeScratchDirectory(), dir = try makeScratchDirectory()
        func args(_ d: String) -> TrainingArguments {
            arguments(d) { $0.perDeviceTrainBatchSize = 2; $0.gradientAccumulationSteps = 3; $0.maxSteps = 4; $0.loggingSteps = 1 }
        }
        let full = try dpoTrainer(accumulation: 3, maxSteps: 4)
        let fullLoop = try TrainingLoop(trainer: full, args: args(fullDir), trainDataset: pairs)
        _ = try fullLoop.train()

        final class StopAfter: TrainerCallback {
            var asked = 0
            let limit: Int
            init(_ limit: Int) { self.limit = limit }
            func shouldStop(state: TrainerState) -> Bool { asked += 1; return asked > limit }
        }
        let first = try dpoTrainer(accumulation: 3, maxSteps: 4)
        let stopped = try TrainingLoop(trainer: first, args: args(dir), trainDataset: pairs, callbacks: [StopAfter(4)]).train()
        // Epoch of 5 micro-batches: steps of 3 and 2; 4 micro-batches = one step and one pending.
        XCTAssertEqual(stopped.interruptedCheckpoint, dir + "/checkpoint-1")
        XCTAssertEqual(first.globalStep, 1)
        XCTAssertEqual(first.pendingMicroBatches, 1)

        let second = try dpoTrainer(accumulation: 3, maxSteps: 4)
        let loop = try TrainingLoop(trainer: second, args: args(dir), trainDataset: pairs)
        _ = try loop.train(resumeFromCheckpoint: stopped.interruptedCheckpoint)
        XCTAssertEqual(full.policy.parameters.array, second.policy.parameters.array)
        XCTAssertEqual(Array(fullLoop.state.logHistory.dropLast()), Array(loop.state.logHistory.dropLast()))
    }

    // MARK: - Errors

    func testErrorsNameWhatIsWrong() throws {
        let dir = try makeScratchDirectory()
        let t = try RecordingTrainer()
        expectDPOError(["train_dataset is empty"]) { _ = try TrainingLoop(trainer: t, args: self.arguments(dir) { _ in }, trainDataset: []).train() }
        expectDPOError(["eval_dataset is empty"]) { _ = try TrainingLoop(trainer: t, args: self.arguments(dir) { _ in }, trainDataset: [1], evalDataset: []) }
        expectDPOError(["eval_strategy 'steps' needs an eval_dataset"]) {
            _ = try TrainingLoop(trainer: t, args: self.arguments(dir) { $0.evalStrategy = .steps }, trainDataset: [1])
        }
        expectDPOError(["evaluate: there is no eval_dataset"]) { _ = try TrainingLoop(trainer: t, args: self.arguments(dir) { _ in }, trainDataset: [1]).evaluate() }
        expectDPOError(["dataloader_drop_last", "no full batch"]) {
            _ = try TrainingLoop(trainer: t, args: self.arguments(dir) { $0.dataloaderDropLast = true }, trainDataset: [1, 2]).train()
        }
        let bad: [(String, (inout TrainingArguments) -> Void)] = [
            ("logging_steps must be >= 1", { $0.loggingSteps = 0 }),
            ("per_device_train_batch_size must be in [1, 2^30]", { $0.perDeviceTrainBatchSize = 0 }),
            ("gradient_accumulation_steps must be in [1, 2^30]", { $0.gradientAccumulationSteps = 0 }),
            ("num_train_epochs must be in (0, 1e6]", { $0.numTrainEpochs = .nan }),
            ("save_total_limit must be >= 1", { $0.saveTotalLimit = 0 }),
            ("report_to: unknown value 'wandb'", { $0.reportTo = ["wandb"] }),
            ("eval_steps must be >= 1", { $0.evalSteps = 0 }),
        ]
        for (message, configure) in bad {
            expectDPOError([message]) { _ = try TrainingLoop(trainer: t, args: self.arguments(dir, configure), trainDataset: [1]) }
        }
        expectDPOError(["eval_strategy: unknown value 'best'"]) { _ = try IntervalStrategy(name: "best", field: "eval_strategy") }
    }

    func testResumeWithOtherBatchingIsRefusedAndChangesNothing() throws {
        let dir = try makeScratchDirectory()
        let pairs = PreferenceTask.pairs(4, seed: 6)
        let a = arguments(dir) { $0.perDeviceTrainBatchSize = 2; $0.maxSteps = 2; $0.saveStrategy = .steps; $0.saveSteps = 1 }
        _ = try TrainingLoop(trainer: try dpoTrainer(accumulation: 1, maxSteps: 2), args: a, trainDataset: pairs).train()
        let fresh = try dpoTrainer(accumulation: 1, maxSteps: 2)
        let before = fresh.policy.parameters.array
        var b = a; b.perDeviceTrainBatchSize = 1
        expectDPOError(["per_device_train_batch_size 2", "the arguments give 1"]) {
            _ = try TrainingLoop(trainer: fresh, args: b, trainDataset: pairs).train(resumeFromCheckpoint: dir + "/checkpoint-1")
        }
        var c = a; c.gradientAccumulationSteps = 2
        expectDPOError(["gradient_accumulation_steps is 2", "accumulates 1"]) {
            _ = try TrainingLoop(trainer: fresh, args: c, trainDataset: pairs).train(resumeFromCheckpoint: dir + "/checkpoint-1")
        }
        XCTAssertEqual(fresh.globalStep, 0)
        XCTAssertEqual(fresh.policy.parameters.array, before)
    }

    /// A checkpoint whose position (1 step and 1 pending micro-batch of 3) has no place in the
    /// epoch of another dataset (4 micro-batches: steps of 3 and 1) is refused before it loads.
    func testResumeAtAPositionOutsideTheEpochIsRefusedAndChangesNothing() throws {
        let dir = try makeScratchDirectory()
        func args() -> TrainingArguments {
            arguments(dir) { $0.perDeviceTrainBatchSize = 2; $0.gradientAccumulationSteps = 3; $0.maxSteps = 4 }
        }
        final class StopAfter: TrainerCallback {
            var asked = 0
            func shouldStop(state: TrainerState) -> Bool { asked += 1; return asked > 4 }
        }
        let first = try dpoTrainer(accumulation: 3, maxSteps: 4)
        let stopped = try TrainingLoop(trainer: first, args: args(), trainDataset: PreferenceTask.pairs(9, seed: 2),
                                       callbacks: [StopAfter()]).train()
        XCTAssertEqual([first.globalStep, first.pendingMicroBatches], [1, 1])
        let fresh = try dpoTrainer(accumulation: 3, maxSteps: 4)
        let before = fresh.policy.parameters.array
        expectDPOError(["the checkpoint", "1 steps and 1 pending micro-batches do not fit an epoch of 4 micro-batches"]) {
            _ = try TrainingLoop(trainer: fresh, args: args(), trainDataset: PreferenceTask.pairs(7, seed: 2))
                .train(resumeFromCheckpoint: stopped.interruptedCheckpoint)
        }
        XCTAssertEqual([fresh.globalStep, fresh.pendingMicroBatches], [0, 0])
        XCTAssertEqual(fresh.policy.parameters.array, before)
        // Counters out of range in the file are format errors, never arithmetic on them.
        let path = try XCTUnwrap(stopped.interruptedCheckpoint) + "/trainer_state.json"
        var state = try XCTUnwrap(try JSON.parse(try readFile(path)).object)
        state["global_step"] = .number(-1)
        state["pending_micro_batches"] = .number(-9.223372036854776e18)
        try writeFileAtomically(path, bytes: Array(JSON.serialize(.object(state)).utf8))
        expectDPOError(["global_step"]) {
            _ = try TrainingLoop(trainer: fresh, args: args(), trainDataset: PreferenceTask.pairs(9, seed: 2))
                .train(resumeFromCheckpoint: stopped.interruptedCheckpoint)
        }
        XCTAssertEqual(fresh.policy.parameters.array, before)
    }

    /// The data layer's prepared rows go in as they are.
    func testPreparedRows() throws {
        let pairs = PreferenceTask.pairs(4, seed: 21)
        let rows = pairs.map { TokenizedPreference(promptIds: $0.promptIds, chosenIds: $0.chosenIds, rejectedIds: $0.rejectedIds) }
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 2; $0.maxSteps = 2 }
        let a = try dpoTrainer(accumulation: 1, maxSteps: 2), b = try dpoTrainer(accumulation: 1, maxSteps: 2)
        _ = try TrainingLoop(trainer: a, args: args, trainRows: rows).train()
        _ = try TrainingLoop(trainer: b, args: args, trainDataset: pairs).train()
        XCTAssertEqual(a.policy.parameters.array, b.policy.parameters.array)

        var c = SFTConfig()
        c.optimizer.maxSteps = 1
        let sft = try SFTTrainer(model: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), config: c)
        let good = TokenizedSFT(inputIds: [1, 5, 6], labels: [-100, 5, 6])
        let twoRuns = TokenizedSFT(inputIds: [1, 5, 6, 7], labels: [-100, 5, -100, 7])
        _ = try TrainingLoop(trainer: sft, args: args, trainRows: [good, twoRuns]).train()
        XCTAssertEqual(sft.globalStep, 2)
    }

    /// Every example is checked before the first step (the bad one named), and a trainer that
    /// reached max_steps is refused rather than silently doing nothing.
    func testExamplesCheckedUpFrontAndNothingToTrain() throws {
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 2; $0.maxSteps = 2 }
        let t = try RecordingTrainer()
        expectDPOError(["train_dataset row 3: -4 is negative"]) { _ = try TrainingLoop(trainer: t, args: args, trainDataset: [1, 2, 3, -4]) }
        expectDPOError(["eval_dataset row 0: -1 is negative"]) {
            _ = try TrainingLoop(trainer: t, args: args, trainDataset: [1], evalDataset: [-1])
        }
        XCTAssertTrue(t.batches.isEmpty)
        let loop = try TrainingLoop(trainer: t, args: args, trainDataset: [1, 2, 3, 4])
        _ = try loop.train()
        XCTAssertEqual(t.globalStep, 2)
        expectDPOError(["2 optimizer steps", "nothing to train"]) { _ = try loop.train() }
        XCTAssertEqual(t.batches.count, 2)
    }

    /// A row whose learned tokens are two runs (two assistant turns) learns exactly those tokens:
    /// its loss is the mean of the two tokens' losses, each with its own context.
    func testSFTRowWithSeveralLearnedRuns() throws {
        let sft = try SFTTrainer(model: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), config: SFTConfig())
        let masked = try TokenizedSFT(inputIds: [1, 5, 6, 7], labels: [-100, 5, -100, 7]).example()
        XCTAssertEqual(masked.completionMask, [true, false, true])
        let apart = [SFTExample(promptIds: [1], completionIds: [5]), SFTExample(promptIds: [1, 5, 6], completionIds: [7])]
        let a = try sft.evaluate([masked]).loss, b = try sft.evaluate(apart).loss
        XCTAssertEqual(a, b, accuracy: 1e-6 * abs(b))
        XCTAssertNotEqual(a, try sft.evaluate([SFTExample(promptIds: [1], completionIds: [5, 6, 7])]).loss)
        expectDPOError(["completion_mask has 2 flags for 3"]) {
            _ = try sft.evaluate([SFTExample(promptIds: [1], completionIds: [5, 6, 7], completionMask: [true, false])])
        }
    }

    /// SFT goes through the same loop: prepared rows from the data layer train as step() does.
    func testSFTTrainEqualsStepDrivenSteps() throws {
        let examples = PreferenceTask.pairs(6, seed: 12).map { SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds) }
        func trainer() throws -> SFTTrainer {
            var c = SFTConfig()
            c.optimizer.learningRate = 1e-2
            c.optimizer.maxSteps = 3
            return try SFTTrainer(model: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), config: c)
        }
        let looped = try trainer()
        let args = arguments(try makeScratchDirectory()) { $0.perDeviceTrainBatchSize = 4; $0.maxSteps = 3; $0.seed = 3 }
        _ = try TrainingLoop(trainer: looped, args: args, trainDataset: examples).train()
        let driven = try trainer()
        for micro in 0..<3 {
            let order = documentedOrder(6, seed: 3, epoch: micro / 2), lo = (micro % 2) * 4
            _ = try driven.step(order[lo..<min(lo + 4, 6)].map { examples[$0] })
        }
        XCTAssertEqual(looped.model.parameters.array, driven.model.parameters.array)
    }
}
