import Foundation
import XCTest
@testable import DPO

/// Data-parallel training (Communicator) over in-process ranks (LocalCommunicator, threads): N
/// ranks with per-device batch b train what one process with batch N x b trains, to float
/// rounding (only the order of the gradient sums differs), with the same metrics; the ranks stay
/// bit-identical to each other; failures reach every rank.
final class DataParallelTests: XCTestCase {
    /// Pairs of varied lengths (token-weighted metrics and the losses' means notice a wrong weighting).
    static func pairs(_ n: Int, seed: UInt64) -> [PreferencePair] {
        var rng = Xoshiro256(seed: seed)
        func words(_ lo: Int, _ hi: Int) -> [Int32] { (0..<(lo + Int(rng.next() % UInt64(hi - lo + 1)))).map { _ in Int32(4 + rng.next() % 24) } }
        return (0..<n).map { _ in
            PreferencePair(promptIds: [1] + words(1, 4), chosenIds: [PreferenceTask.good] + words(0, 5) + [2],
                           rejectedIds: [PreferenceTask.bad] + words(0, 5) + [2])
        }
    }

    static func sftExamples(_ n: Int, seed: UInt64) -> [SFTExample] {
        pairs(n, seed: seed).map { SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds) }
    }

    func args(_ dir: String, batch: Int, _ configure: (inout TrainingArguments) -> Void = { _ in }) -> TrainingArguments {
        var a = TrainingArguments()
        a.outputDir = dir
        a.reportTo = ["none"]
        a.saveStrategy = .no
        a.perDeviceTrainBatchSize = batch
        a.perDeviceEvalBatchSize = batch
        a.loggingSteps = 1
        a.seed = 11
        configure(&a)
        return a
    }

    func dpoTrainer(_ configure: (inout DPOConfig) -> Void = { _ in }) throws -> DPOTrainer {
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        c.optimizer.maxGradNorm = 0.5  // clipping on: the norm of the summed gradient matters
        configure(&c)
        return try DPOTrainer(policy: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), reference: nil, config: c)
    }

    func sftTrainer() throws -> SFTTrainer {
        var c = SFTConfig()
        c.optimizer.learningRate = 1e-2
        return try SFTTrainer(model: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), config: c)
    }

    /// max |a - b| / max |b|.
    func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
        var diff = 0.0, scale = 0.0
        for (x, y) in zip(a, b) { diff = max(diff, Double(abs(x - y))); scale = max(scale, Double(abs(y))) }
        return diff / scale
    }

    /// Same records (keys, steps) with values equal to a relative 1e-5 (train_runtime and the
    /// rates aside: they are times).
    func assertSameHistory(_ a: [LogRecord], _ b: [LogRecord], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        let timed: Set<String> = ["train_runtime", "train_samples_per_second", "train_steps_per_second"]
        for (x, y) in zip(a, b) {
            XCTAssertEqual(Set(x.keys), Set(y.keys), file: file, line: line)
            for (k, v) in y where !timed.contains(k) {
                XCTAssertEqual(x[k]!, v, accuracy: 1e-5 * max(abs(v), 1e-3), "\(k) at step \(y["step"] ?? -1)", file: file, line: line)
            }
        }
    }

    /// One process with batch ranks x b, and `ranks` in-process ranks with batch b: the trained
    /// weights and the log histories (rank 0's; every rank's must be the same).
    func compare<T: Trainer>(ranks: Int, batch b: Int, _ make: () throws -> T, weights: (T) -> [Float], data: [T.Example],
                             eval: [T.Example]? = nil, _ configure: @escaping (inout TrainingArguments) -> Void,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let single = try make()
        let singleLoop = try TrainingLoop(trainer: single, args: args(try makeScratchDirectory(), batch: ranks * b, configure),
                                          trainDataset: data, evalDataset: eval)
        _ = try singleLoop.train()

        let trainers = try (0..<ranks).map { _ in try make() }
        let dir = try makeScratchDirectory()
        let histories = try LocalGroup(size: ranks).runRanks { r, c -> [LogRecord] in
            try (trainers[r] as AnyObject as? DPOTrainer)?.setCommunicator(c)
            try (trainers[r] as AnyObject as? SFTTrainer)?.setCommunicator(c)
            let loop = try TrainingLoop(trainer: trainers[r], args: self.args(dir, batch: b, configure), trainDataset: data, evalDataset: eval)
            _ = try loop.train()
            return loop.state.logHistory
        }
        let w = weights(trainers[0])
        for r in 1..<ranks {
            XCTAssertEqual(weights(trainers[r]), w, "rank \(r)'s weights are rank 0's, bit for bit", file: file, line: line)
            XCTAssertEqual(histories[r].map { $0.filter { !$0.key.hasPrefix("train_") } },
                           histories[0].map { $0.filter { !$0.key.hasPrefix("train_") } }, "rank \(r)'s log history", file: file, line: line)
        }
        XCTAssertEqual(single.globalStep, trainers[0].globalStep, file: file, line: line)
        XCTAssertNotEqual(w, try weights(make()), "the weights changed", file: file, line: line)
        let rel = relativeDifference(w, weights(single))
        print("data parallel: \(ranks) ranks x \(b) vs 1 x \(ranks * b): max relative weight difference \(rel)")
        XCTAssertLessThanOrEqual(rel, 1e-5, "max relative difference of the weights", file: file, line: line)
        assertSameHistory(histories[0], singleLoop.state.logHistory, file: file, line: line)
    }

    // MARK: - Equivalence with one process

    /// 2 ranks x 2 = batch 4, with accumulation and an epoch whose last micro-batch is short (10
    /// pairs: micro-batches of 4, 4, 2), evaluation split across the ranks too.
    func testTwoRanksEqualOneProcessWithTheGlobalBatch() throws {
        let data = Self.pairs(10, seed: 1)
        try compare(ranks: 2, batch: 2, { try self.dpoTrainer() }, weights: { $0.policy.parameters.array }, data: data,
                    eval: Array(Self.pairs(5, seed: 9))) {
            $0.gradientAccumulationSteps = 2; $0.maxSteps = 3; $0.evalStrategy = .steps; $0.evalSteps = 2
        }
    }

    /// 3 ranks x 2 on 10 pairs: the last global micro-batch (4 pairs) leaves rank 2 nothing, and
    /// the losses that couple a batch's pairs (aot sorts them, the rpo `sft` term is a token mean
    /// over the batch, WPO's weights) are still the global batch's.
    func testEmptyShardsAndBatchCoupledLosses() throws {
        let data = Self.pairs(10, seed: 2)
        for loss in [[DPOLossType.sigmoid], [.aot, .sft], [.ipo]] {
            try compare(ranks: 3, batch: 2, {
                try self.dpoTrainer {
                    $0.lossType = loss
                    $0.useWeighting = loss == [.ipo]
                    $0.ldAlpha = loss == [.sigmoid] ? 0.5 : nil
                    if loss.count == 2 { $0.lossWeights = [1, 0.5] }
                }
            }, weights: { $0.policy.parameters.array }, data: data) {
                $0.maxSteps = 4; $0.shuffle = loss != [.ipo]
            }
        }
    }

    /// SFT: the loss is a token mean over the global micro-batch, not a mean of the ranks' means.
    func testSFTTwoRanksEqualOneProcess() throws {
        let data = Self.sftExamples(7, seed: 3)
        try compare(ranks: 2, batch: 2, { try self.sftTrainer() }, weights: { $0.model.parameters.array }, data: data,
                    eval: Self.sftExamples(3, seed: 4)) {
            $0.gradientAccumulationSteps = 2; $0.maxSteps = 3; $0.evalStrategy = .steps; $0.evalSteps = 3
        }
    }

    /// The trainer's grain: after each rank accumulates its shard, the sum of the ranks' gradient
    /// buffers is the gradient of the whole batch in one process (a rank with no pairs adds zeros),
    /// and every rank reports the whole batch's metrics.
    func testSummedShardGradientsAreTheGlobalBatchGradient() throws {
        let batch = Self.pairs(5, seed: 4)
        let single = try dpoTrainer()
        let m = try single.accumulate(batch)
        let expected = single.policy.gradients!.array
        let shards = [Array(batch[0..<3]), Array(batch[3..<5]), []]
        let trainers = try (0..<3).map { _ in try dpoTrainer() }
        let out = try LocalGroup(size: 3).runRanks { r, c -> (DPOMetrics, [Float]) in
            try trainers[r].setCommunicator(c)
            return (try trainers[r].accumulate(shards[r]), trainers[r].policy.gradients!.array)
        }
        XCTAssertTrue(out[2].1.allSatisfy { $0 == 0 }, "an empty shard adds nothing")
        var sum = out[0].1
        for r in 1..<3 { for i in sum.indices { sum[i] += out[r].1[i] } }
        XCTAssertLessThanOrEqual(relativeDifference(sum, expected), 1e-6)
        for r in 0..<3 {
            XCTAssertEqual(out[r].0.loss, m.loss, accuracy: 1e-12 * abs(m.loss))
            XCTAssertEqual(out[r].0.logitsChosen, m.logitsChosen, accuracy: 1e-6 * abs(m.logitsChosen))
            XCTAssertEqual(out[r].0.entropy, m.entropy, accuracy: 1e-6 * abs(m.entropy))
            XCTAssertEqual(out[r].0.numTokens, m.numTokens)
        }
    }

    // MARK: - Resume

    /// A data-parallel run resumed from its checkpoint (rank 0 writes it, every rank reads it) is
    /// bit-identical to the uninterrupted run; a different global batch is refused.
    func testResumeIsBitIdentical() throws {
        let data = Self.pairs(9, seed: 5)
        func configure(_ a: inout TrainingArguments) {
            a.gradientAccumulationSteps = 2; a.maxSteps = 4; a.loggingSteps = 3
            a.saveStrategy = .steps; a.saveSteps = 2
        }
        func run(_ dir: String, resume: String?) throws -> ([[Float]], [LogRecord]) {
            let trainers = try (0..<2).map { _ in try dpoTrainer() }
            let histories = try LocalGroup(size: 2).runRanks { r, c -> [LogRecord] in
                try trainers[r].setCommunicator(c)
                let loop = try TrainingLoop(trainer: trainers[r], args: self.args(dir, batch: 2, configure), trainDataset: data)
                _ = try loop.train(resumeFromCheckpoint: resume)
                return loop.state.logHistory
            }
            return (trainers.map { $0.policy.parameters.array }, histories[0])
        }
        let full = try makeScratchDirectory(), resumed = try makeScratchDirectory()
        let a = try run(full, resume: nil)
        let state = try JSON.parse(try readFile(full + "/checkpoint-2/trainer_state.json")).object!
        XCTAssertEqual(state["world_size"]?.int, 2)
        XCTAssertEqual(state["train_batch_size"]?.int, 2)
        let b = try run(resumed, resume: full + "/checkpoint-2")
        XCTAssertEqual(a.0[0], b.0[0], "bit-identical weights")
        XCTAssertEqual(b.0[0], b.0[1])
        XCTAssertEqual(Array(a.1.dropLast()), Array(b.1.dropLast()), "the same log history")
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed + "/checkpoint-2"), "nothing written for the resumed-from step")
        XCTAssertTrue(FileManager.default.fileExists(atPath: resumed + "/checkpoint-4/trainer_state.json"))

        // One process with batch 2 would see other batches: refused, naming both.
        let lone = try dpoTrainer()
        expectDPOError(["per_device_train_batch_size 2 on 2 ranks, the arguments give 2 (the batches would differ)"]) {
            _ = try TrainingLoop(trainer: lone, args: self.args(try self.makeScratchDirectory(), batch: 2, configure), trainDataset: data)
                .train(resumeFromCheckpoint: full + "/checkpoint-2")
        }
        // One process with the global batch (4) continues the same run.
        let whole = try dpoTrainer()
        _ = try TrainingLoop(trainer: whole, args: args(try makeScratchDirectory(), batch: 4, configure), trainDataset: data)
            .train(resumeFromCheckpoint: full + "/checkpoint-2")
        XCTAssertLessThanOrEqual(relativeDifference(whole.policy.parameters.array, a.0[0]), 1e-5)
    }

    // MARK: - Stops and failures

    /// A stop asked on one rank stops every rank at the next optimizer step, where rank 0 writes a
    /// checkpoint without pending gradients.
    func testStopOnOneRankStopsAllAtAStepBoundary() throws {
        final class StopAfter: TrainerCallback {
            var asked = 0
            func shouldStop(state: TrainerState) -> Bool { asked += 1; return asked > 2 }
        }
        let data = Self.pairs(12, seed: 6)
        let dir = try makeScratchDirectory()
        let trainers = try (0..<2).map { _ in try dpoTrainer() }
        let outs = try LocalGroup(size: 2).runRanks { r, c -> TrainOutput in
            try trainers[r].setCommunicator(c)
            let loop = try TrainingLoop(trainer: trainers[r], args: self.args(dir, batch: 1) { $0.gradientAccumulationSteps = 2; $0.maxSteps = 5 },
                                        trainDataset: data, callbacks: r == 1 ? [StopAfter()] : [])
            return try loop.train()
        }
        for (r, t) in trainers.enumerated() {
            XCTAssertEqual(t.globalStep, 2, "rank \(r)"); XCTAssertEqual(t.pendingMicroBatches, 0, "rank \(r)")
            XCTAssertEqual(outs[r].interruptedCheckpoint, dir + "/checkpoint-2")
        }
        let state = try JSON.parse(try readFile(dir + "/checkpoint-2/trainer_state.json")).object!
        XCTAssertEqual(state["pending_micro_batches"]?.int, 0)
    }

    /// A rank whose part of a batch fails makes every rank throw (no rank waits forever): the
    /// failing rank its own error, the others an error of the same kind naming it. Nothing changed.
    func testAFailingRankStopsEveryRank() throws {
        var bad = Self.pairs(2, seed: 7)
        bad[1].chosenIds[0] = 999  // outside the vocabulary: only rank 1's shard
        let trainers = try (0..<2).map { _ in try dpoTrainer() }
        let outs = try LocalGroup(size: 2, timeout: 30).runRanksCatching { r, c -> DPOStepResult in
            try trainers[r].setCommunicator(c)
            return try trainers[r].step([bad[r]])
        }
        guard case .failure(let e0) = outs[0], case .failure(let e1) = outs[1] else { return XCTFail("both ranks must fail: \(outs)") }
        XCTAssertTrue("\(e1)".contains("outside the vocabulary"), "\(e1)")
        XCTAssertTrue("\(e0)".contains("invalid argument: rank 1 of 2 failed"), "\(e0)")
        for t in trainers { XCTAssertEqual(t.pendingMicroBatches, 0); XCTAssertEqual(t.globalStep, 0) }
    }

    /// A non-finite gradient on one rank makes the summed gradient non-finite: every rank refuses
    /// the step alike and drops the accumulation; the weights are unchanged.
    func testNonFiniteGradientIsRefusedOnEveryRank() throws {
        let data = Self.pairs(2, seed: 8)
        let trainers = try (0..<2).map { _ in try dpoTrainer() }
        let before = trainers[0].policy.parameters.array
        let outs = try LocalGroup(size: 2, timeout: 30).runRanksCatching { r, c -> DPOMetrics in
            try trainers[r].setCommunicator(c)
            try trainers[r].accumulate([data[r]])
            if r == 1 { trainers[r].policy.gradients!.pointer[3] = .nan }
            return try trainers[r].applyOptimizer()
        }
        for (r, out) in outs.enumerated() {
            guard case .failure(let e) = out else { XCTFail("rank \(r) stepped"); continue }
            XCTAssertTrue("\(e)".contains("numeric error: the gradient norm is nan; the accumulated micro-batches are dropped on every rank"), "\(e)")
            XCTAssertEqual(trainers[r].pendingMicroBatches, 0)
            XCTAssertEqual(trainers[r].globalStep, 0)
            XCTAssertEqual(trainers[r].policy.parameters.array, before)
        }
    }

    /// A host's communicator that returns garbage, or claims an impossible rank, is an error, never a trap.
    func testBrokenCommunicatorIsAnError() throws {
        final class Broken: Communicator {
            let rank: Int, size: Int
            init(rank: Int, size: Int) { self.rank = rank; self.size = size }
            func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws { for i in values.indices { values[i] = .nan } }
            func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws { for i in values.indices { values[i] = 1e300 } }
        }
        let t = try dpoTrainer()
        expectDPOError(["communicator: rank 2 of size 2 is not a rank"]) { try t.setCommunicator(Broken(rank: 2, size: 2)) }
        expectDPOError(["communicator: rank 0 of size 0"]) { try t.setCommunicator(Broken(rank: 0, size: 0)) }
        try t.setCommunicator(Broken(rank: 0, size: 2))
        expectDPOError(["came back from the allreduce as 1e+300, not a count"]) { try t.accumulate(Self.pairs(1, seed: 3)) }
        XCTAssertEqual(t.pendingMicroBatches, 0)
        let sft = try sftTrainer()
        try sft.setCommunicator(Broken(rank: 1, size: 2))
        expectDPOError(["not a count"]) { _ = try sft.evaluate(Self.sftExamples(1, seed: 3)) }
    }

    /// Between optimizer steps only: a rank's pending gradients are its part alone.
    func testCheckpointMidAccumulationIsRefused() throws {
        let data = Self.pairs(2, seed: 9)
        let trainers = try (0..<2).map { _ in try dpoTrainer { $0.optimizer.gradientAccumulationSteps = 2 } }
        let dir = try makeScratchDirectory()
        let outs = try LocalGroup(size: 2).runRanksCatching { r, c -> Void in
            try trainers[r].setCommunicator(c)
            try trainers[r].accumulate([data[r]])
            try trainers[r].saveCheckpoint(directory: dir + "/rank\(r)")
        }
        for out in outs {
            guard case .failure(let e) = out else { XCTFail("saved mid-accumulation"); continue }
            XCTAssertTrue("\(e)".contains("written between optimizer steps"), "\(e)")
        }
        expectDPOError(["communicator cannot change while 1 micro-batches wait"]) { try trainers[0].setCommunicator(nil) }
    }
}
