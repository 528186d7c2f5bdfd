import XCTest
@testable import DPO

/// A learnable synthetic preference task: prompts of 3 random "word" tokens; the preferred
/// completion is GOOD followed by the prompt copied, the dispreferred one BAD followed by random
/// words. SFT sees both kinds, so the SFT model is indifferent; DPO must learn the preference and
/// carry it to prompts it never saw.
enum PreferenceTask {
    static let vocab = 32, good: Int32 = 30, bad: Int32 = 31
    static func pairs(_ n: Int, seed: UInt64) -> [PreferencePair] {
        var rng = Xoshiro256(seed: seed)
        func word() -> Int32 { Int32(4 + rng.next() % 24) }
        return (0..<n).map { _ in
            let prompt = [word(), word(), word()]
            return PreferencePair(promptIds: [1] + prompt, chosenIds: [good] + prompt + [2],
                                  rejectedIds: [bad, word(), word(), word(), 2])
        }
    }
    static var config: LlamaConfig {
        var c = LlamaConfig(vocabSize: vocab, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2, tieWordEmbeddings: true)
        c.rmsNormEps = 1e-5
        return c
    }
}

final class TrainingTests: XCTestCase {
    func sftModel(steps: Int) throws -> LlamaModel {
        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1)
        var sc = SFTConfig()
        sc.optimizer.learningRate = 3e-3
        sc.optimizer.lrSchedulerType = .constant
        sc.optimizer.maxSteps = steps
        let sft = try SFTTrainer(model: model, config: sc)
        var first = 0.0, last = 0.0
        for s in 0..<steps {
            let batch = PreferenceTask.pairs(16, seed: UInt64(100 + s)).flatMap {
                [SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds),
                 SFTExample(promptIds: $0.promptIds, completionIds: $0.rejectedIds)]
            }
            let m = try sft.step(batch).metrics
            if s == 0 { first = m.loss }
            last = m.loss
        }
        XCTAssertLessThan(last, first * 0.7, "SFT loss \(first) -> \(last)")
        return model
    }

    /// Issue 3, proof 3: held-out reward accuracy >= 0.95 and loss < 0.2 after a few hundred steps.
    func testDPOLearnsAHeldOutPreference() throws {
        let policy = try sftModel(steps: 60)
        var c = DPOConfig()
        c.beta = 0.1
        c.optimizer.learningRate = 2e-3
        c.optimizer.lrSchedulerType = .constant
        c.optimizer.maxSteps = 200
        let trainer = try DPOTrainer(policy: policy, reference: nil, config: c)
        let heldOut = PreferenceTask.pairs(64, seed: 999)
        let before = try trainer.evaluate(heldOut)
        var losses: [Double] = []
        for s in 0..<200 {
            losses.append(try trainer.step(PreferenceTask.pairs(16, seed: UInt64(5000 + s))).metrics.loss)
        }
        let after = try trainer.evaluate(heldOut)
        let tail = losses.suffix(10).reduce(0, +) / 10
        print("DPO learning: held-out accuracy \(before.rewardsAccuracies) -> \(after.rewardsAccuracies), margin \(after.rewardsMargins), loss \(losses[0]) -> \(tail)")
        XCTAssertEqual(before.rewardsMargins, 0, accuracy: 1e-9, "the snapshot reference equals the initial policy")
        XCTAssertGreaterThanOrEqual(after.rewardsAccuracies, 0.95)
        XCTAssertLessThan(tail, 0.2)
        XCTAssertLessThan(after.loss, 0.2)
    }

    func smallTrainer(_ edit: (inout DPOConfig) -> Void = { _ in }, reference: Bool = true) throws -> DPOTrainer {
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3)
        let ref = reference ? try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 4) : nil
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-3
        c.optimizer.weightDecay = 0.01
        edit(&c)
        return try DPOTrainer(policy: policy, reference: ref, config: c)
    }

    /// Issue 3, proof 4: accumulating k micro-batches equals one batch of k times the pairs.
    func testAccumulationEqualsOneLargeBatch() throws {
        let pairs = PreferenceTask.pairs(8, seed: 42)
        let big = try smallTrainer()
        try big.accumulate(pairs)
        let small = try smallTrainer { $0.optimizer.gradientAccumulationSteps = 4 }
        for k in 0..<4 { try small.accumulate(Array(pairs[(2 * k)..<(2 * k + 2)])) }
        let a = big.policy.gradients!.array, b = small.policy.gradients!.array
        let scale = a.map(abs).max()!
        for i in 0..<a.count { XCTAssertEqual(a[i], b[i], accuracy: 1e-5 * max(scale, 1)) }
        // And the optimizer steps agree.
        let m1 = try big.applyOptimizer(), m2 = try small.applyOptimizer()
        XCTAssertEqual(m1.gradNorm!, m2.gradNorm!, accuracy: 1e-5 * m1.gradNorm!)
        XCTAssertEqual(m1.loss, m2.loss, accuracy: 1e-6)
    }

    /// Issue 3, proof 4: resume from step k (mid-accumulation) and run to n = an uninterrupted run.
    func testResumeIsBitIdentical() throws {
        func configure(_ c: inout DPOConfig) {
            c.optimizer.gradientAccumulationSteps = 2
            c.optimizer.lrSchedulerType = .linear
            c.optimizer.warmupSteps = 2
            c.optimizer.maxSteps = 6
            c.syncRefModel = true
            c.refModelSyncSteps = 2
        }
        let batches = (0..<12).map { PreferenceTask.pairs(3, seed: UInt64(70 + $0)) }
        let straight = try smallTrainer(configure, reference: false)
        for b in batches { _ = try straight.step(b) }

        let first = try smallTrainer(configure, reference: false)
        for b in batches[..<5] { _ = try first.step(b) }
        let dir = TestModels.temporaryDirectory("resume")
        try first.saveCheckpoint(directory: dir)
        // A fresh process would build a new model and trainer, then load.
        let resumed = try smallTrainer(configure, reference: false)
        try resumed.loadCheckpoint(directory: dir)
        XCTAssertEqual(resumed.globalStep, 2)
        XCTAssertEqual(resumed.pendingMicroBatches, 1)
        for b in batches[5...] { _ = try resumed.step(b) }
        XCTAssertEqual(resumed.globalStep, 6)
        XCTAssertEqual(straight.policy.parameters.array, resumed.policy.parameters.array, "policy weights bit-identical")
        XCTAssertEqual(straight.reference!.parameters.array, resumed.reference!.parameters.array, "TR-DPO reference bit-identical")
        XCTAssertEqual(straight.state.adam.v.array, resumed.state.adam.v.array)
    }

    /// The plain layout (a padded TRL batch's work) and the shared-prompt layout agree.
    func testPlainPackingEqualsSharedPrompt() throws {
        let pairs = PreferenceTask.pairs(5, seed: 77)
        let shared = try smallTrainer(), plain = try smallTrainer()
        plain.packing = .plain
        let a = try shared.accumulate(pairs), b = try plain.accumulate(pairs)
        for ((n, x), (_, y)) in zip(a.named(), b.named()) { XCTAssertEqual(x, y, accuracy: 1e-5 * max(1, abs(x)), n) }
        let ga = shared.policy.gradients!.array, gb = plain.policy.gradients!.array
        let scale = ga.map(abs).max()!
        for i in 0..<ga.count { XCTAssertEqual(ga[i], gb[i], accuracy: 1e-5 * scale) }
    }

    func testEvaluateChangesNothing() throws {
        let t = try smallTrainer()
        _ = try t.step(PreferenceTask.pairs(4, seed: 1))
        let params = t.policy.parameters.array, m = t.state.adam.m.array, step = t.globalStep, tokens = t.state.numTokens
        let e1 = try t.evaluate(PreferenceTask.pairs(4, seed: 2))
        let e2 = try t.evaluate(PreferenceTask.pairs(4, seed: 2))
        XCTAssertEqual(e1, e2)
        XCTAssertNil(e1.gradNorm)
        XCTAssertEqual(e1.named(prefix: "eval_").first?.name, "eval_loss")
        XCTAssertEqual(params, t.policy.parameters.array)
        XCTAssertEqual(m, t.state.adam.m.array)
        XCTAssertEqual(step, t.globalStep)
        XCTAssertEqual(tokens, t.state.numTokens)
    }

    func testNonFiniteBatchIsRefusedAndChangesNothing() throws {
        let t = try smallTrainer { $0.optimizer.gradientAccumulationSteps = 2 }
        try t.accumulate(PreferenceTask.pairs(2, seed: 5))
        let grads = t.policy.gradients!.array, params = t.policy.parameters.array
        // Poison the embedding row of a token that only the next batch uses.
        let row = t.policy.parameter("model.embed_tokens.weight")!
        let h = PreferenceTask.config.hiddenSize
        let saved = row[3 * h]
        row[3 * h] = .infinity
        var poisoned = PreferenceTask.pairs(2, seed: 6)
        poisoned[0].promptIds.append(3)
        XCTAssertThrowsError(try t.step(poisoned)) { e in
            guard case DPOError.numeric = e else { return XCTFail("expected a numeric error, got \(e)") }
        }
        row[3 * h] = saved
        XCTAssertEqual(t.policy.gradients!.array, grads)
        XCTAssertEqual(t.policy.parameters.array, params)
        XCTAssertEqual(t.globalStep, 0)
        XCTAssertEqual(t.pendingMicroBatches, 1)
        // The caller skips the batch and goes on.
        let r = try t.step(PreferenceTask.pairs(2, seed: 7))
        XCTAssertTrue(r.optimizerStepped)
        XCTAssertEqual(t.globalStep, 1)
    }

    func testPrecomputedReferenceLogProbs() throws {
        let withRef = try smallTrainer()
        let pairs = PreferenceTask.pairs(4, seed: 9)
        let expected = try withRef.evaluate(pairs)
        // Precompute through a trainer that holds the reference, attach, and train without one.
        let pre = try withRef.precomputeReferenceLogProbs(pairs)
        var attached = pairs
        for i in attached.indices { attached[i].refChosenLogps = pre[i].chosen; attached[i].refRejectedLogps = pre[i].rejected }
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3)
        var c = withRef.config; c.precomputeRefLogProbs = true
        let noRef = try DPOTrainer(policy: policy, reference: nil, config: c)
        XCTAssertNil(noRef.reference)
        let got = try noRef.evaluate(attached)
        XCTAssertEqual(got.loss, expected.loss, accuracy: 1e-6)
        XCTAssertEqual(got.rewardsMargins, expected.rewardsMargins, accuracy: 1e-6)
        XCTAssertThrowsError(try noRef.step(pairs)) { XCTAssertTrue("\($0)".contains("ref_chosen_logps"), "\($0)") }
        var bad = attached; bad[1].refRejectedLogps = .nan
        XCTAssertThrowsError(try noRef.step(bad)) { XCTAssertTrue("\($0)".contains("pair 1"), "\($0)") }
        XCTAssertNoThrow(try noRef.step(attached))
        XCTAssertNil(noRef.reference, "no reference model is ever held")
    }

    /// The reference's forward runs in the policy's workspace (no second workspace), which must
    /// not change any result, nor disturb a policy backward that is still pending.
    func testReferenceRunsInThePolicyWorkspace() throws {
        let t = try smallTrainer()
        let pairs = PreferenceTask.pairs(4, seed: 12)
        let own = try t.reference!.forward(try t.pack(pairs).packed, head: try t.pack(pairs).head, keepActivations: false)
        t.reference!.releaseWorkspace()
        let (chosen, rejected) = try t.referenceSums(pairs, try t.pack(pairs))
        XCTAssertNil(t.reference!.workspace, "the reference allocated no workspace of its own")
        XCTAssertNotNil(t.policy.workspace)
        let stats = PairStatistics(own, batch: try t.pack(pairs), ldAlpha: nil)
        XCTAssertEqual(chosen, stats.chosen)
        XCTAssertEqual(rejected, stats.rejected)

        // With a backward pending in the policy's workspace, the reference uses its own.
        let batch = try t.pack(pairs)
        let other = try t.pack(PreferenceTask.pairs(3, seed: 13))
        let dlogp = (0..<batch.head.count).map { Float($0 % 5) * 0.01 - 0.02 }
        _ = try t.policy.forward(batch.packed, head: batch.head, keepActivations: true)
        try t.policy.backward(dlogp: dlogp)
        let expected = t.policy.gradients!.array
        try t.policy.zeroGradients()
        _ = try t.policy.forward(batch.packed, head: batch.head, keepActivations: true)
        _ = try t.reference!.forward(other.packed, head: other.head, keepActivations: false, workspaceOf: t.policy)
        XCTAssertNotNil(t.reference!.workspace)
        try t.policy.backward(dlogp: dlogp)
        XCTAssertEqual(t.policy.gradients!.array, expected)
    }

    func testTRDPOSyncMixesTheReference() throws {
        let t = try smallTrainer({ $0.syncRefModel = true; $0.refModelSyncSteps = 1; $0.refModelMixupAlpha = 0.25 })
        let refBefore = t.reference!.parameters.array
        _ = try t.step(PreferenceTask.pairs(2, seed: 1))
        let policy = t.policy.parameters.array, ref = t.reference!.parameters.array
        for i in stride(from: 0, to: ref.count, by: 97) {
            XCTAssertEqual(ref[i], 0.75 * refBefore[i] + 0.25 * policy[i], accuracy: 1e-7)
        }
    }

    func testBadBatchesAreRefusedWithTheirIndex() throws {
        let t = try smallTrainer { $0.maxLength = 6 }
        var p = PreferenceTask.pairs(3, seed: 1)
        p[2].chosenIds = []
        XCTAssertThrowsError(try t.step(p)) { XCTAssertTrue("\($0)".contains("pair 2: chosen_ids is empty"), "\($0)") }
        p = PreferenceTask.pairs(3, seed: 1)
        p[1].rejectedIds[0] = 32
        XCTAssertThrowsError(try t.step(p)) { XCTAssertTrue("\($0)".contains("rejected_ids[0] = 32"), "\($0)") }
        p = PreferenceTask.pairs(3, seed: 1)
        p[0].promptIds = [1, 5, 6, 7, 8, 9]
        XCTAssertThrowsError(try t.step(p)) { XCTAssertTrue("\($0)".contains("max_length"), "\($0)") }
        XCTAssertThrowsError(try t.step([]))
        XCTAssertEqual(t.globalStep, 0)
        XCTAssertNoThrow(try t.step(PreferenceTask.pairs(3, seed: 1)))
    }

    func testSFTCheckpointResume() throws {
        func make() throws -> SFTTrainer {
            var c = SFTConfig(); c.optimizer.learningRate = 1e-3; c.optimizer.gradientAccumulationSteps = 2
            return try SFTTrainer(model: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 8), config: c)
        }
        let batches = (0..<6).map { s in PreferenceTask.pairs(3, seed: UInt64(s)).map { SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds) } }
        let a = try make()
        for b in batches { _ = try a.step(b) }
        let b1 = try make()
        for b in batches[..<3] { _ = try b1.step(b) }
        let dir = TestModels.temporaryDirectory("sft-resume")
        try b1.saveCheckpoint(directory: dir)
        let b2 = try make()
        try b2.loadCheckpoint(directory: dir)
        for b in batches[3...] { _ = try b2.step(b) }
        XCTAssertEqual(a.model.parameters.array, b2.model.parameters.array)
    }
}
