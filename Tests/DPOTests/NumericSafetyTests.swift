import Foundation
import XCTest
@testable import DPO

/// Non-finite numbers (NaN/inf weights, overflowing logits, optimizer steps that blow up) give
/// `DPOError.numeric` and change nothing; so does an optimizer step that would make them non-finite.
/// Configs whose derived values would be non-finite, token ids outside the vocabulary and more
/// loss types than loss weights may have are refused when validated.
final class NumericSafetyTests: XCTestCase {
    func assertNumeric<T>(_ body: @autoclosure () throws -> T, _ what: String,
                          file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), what, file: file, line: line) { e in
            guard case DPOError.numeric = e else {
                return XCTFail("\(what): expected a numeric error, got \(e)", file: file, line: line)
            }
        }
    }

    func assertInvalid(_ c: LlamaConfig, mentions field: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try c.validate(), field, file: file, line: line) { e in
            guard case DPOError.invalidArgument(let m) = e else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertTrue(m.contains(field), m, file: file, line: line)
        }
    }

    /// Sets every entry of the named tensor.
    func fill(_ model: LlamaModel, _ name: String, _ value: Float) {
        let t = model.parameter(name)!
        for i in 0..<t.count { t[i] = value }
    }

    /// Token ids inside every test vocabulary (the smallest has 18 entries).
    static let completions = [(prompt: [Int32](arrayLiteral: 1, 5, 9), completion: [Int32](arrayLiteral: 13, 5, 2))]

    // MARK: - The LM head's row statistics

    /// A logits row of NaNs laid out so that its last entry ends a readable page, followed by an
    /// unreadable one: the argmax scan must stay inside the row (before: it read on, looking for a
    /// maximum that a NaN row never has, and faulted).
    func testRowStatsOfANaNRowStayInsideTheRow() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mapped = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw = mapped, raw != UnsafeMutableRawPointer(bitPattern: -1) else { throw XCTSkip("mmap failed") }
        defer { munmap(raw, 2 * page) }
        XCTAssertEqual(mprotect(raw + page, page, PROT_NONE), 0)
        for n in [5, 24, 40] {
            let row = (raw + page).assumingMemoryBound(to: Float.self) - n
            for v in 0..<n { row[v] = .nan }
            let s = headRowStats(row, vocab: n, label: 1)
            XCTAssertTrue(s.logp.isNaN, "n = \(n)")
            XCTAssertEqual(s.argmaxHit, 0)
            // NaN entries next to finite ones: the finite maximum is still found.
            for v in 0..<n { row[v] = v == n - 1 ? 3 : .nan }
            XCTAssertEqual(headRowStats(row, vocab: n, label: n - 1).argmaxHit, 1, "n = \(n)")
        }
    }

    // MARK: - Non-finite weights reach every forward path as a numeric error

    func testSequenceLogProbsOfNonFiniteModelsAreNumericErrors() throws {
        for (name, value) in [("lm_head.weight", Float.nan), ("model.norm.weight", .infinity),
                              ("lm_head.weight", .greatestFiniteMagnitude)] {
            let model = try LlamaModel.randomlyInitialized(config: TestModels.mhaUntiedBias, seed: 1)
            fill(model, name, value)
            assertNumeric(try model.sequenceLogProbs(Self.completions), "\(name) = \(value)")
        }
        // The same model with finite weights works.
        XCTAssertNoThrow(try LlamaModel.randomlyInitialized(config: TestModels.mhaUntiedBias, seed: 1)
            .sequenceLogProbs(Self.completions))
    }

    func testGenerateWithNaNWeightsFails() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        var g = GenerationConfig(); g.maxNewTokens = 4; g.eosTokenIds = []
        XCTAssertNoThrow(try model.generate([[1, 2, 3]], config: g))
        fill(model, "model.norm.weight", .nan)
        assertNumeric(try model.generate([[1, 2, 3]], config: g), "greedy")
        g.temperature = 0.7
        assertNumeric(try model.generate([[1, 2, 3], [4]], config: g), "sampling")
    }

    /// A tiny temperature (finite and > 0, so accepted) samples like greedy decoding: the logits
    /// divided by 1e-310 overflowed to inf and the probabilities became NaN (the draw then took
    /// the last token every time).
    func testTinyTemperatureSamplesLikeGreedy() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        var greedy = GenerationConfig(); greedy.maxNewTokens = 8; greedy.eosTokenIds = []
        var g = greedy; g.temperature = 1e-310; g.seed = 3
        XCTAssertEqual(try model.generate([[1, 2], [5]], config: g), try model.generate([[1, 2], [5]], config: greedy))
        g.topK = 5; g.topP = 0.5
        XCTAssertEqual(try model.generate([[1, 2], [5]], config: g), try model.generate([[1, 2], [5]], config: greedy))
    }

    func smallTrainer(reference: LlamaModel? = nil, _ edit: (inout DPOConfig) -> Void = { _ in }) throws -> DPOTrainer {
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        c.optimizer.lrSchedulerType = .constant
        edit(&c)
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 2)
        return try DPOTrainer(policy: policy, reference: reference, config: c)
    }

    /// What a failed call must leave as it was.
    /// (Bit patterns, so that NaN weights compare equal to themselves.)
    struct TrainerState {
        var params: [UInt32], m: [UInt32], v: [UInt32], grads: [UInt32]?, adamSteps: Int, globalStep: Int,
            pending: Int, pendingMetrics: Int, tokens: Int, referenceHeld: Bool
        init(_ t: DPOTrainer) {
            func bits(_ b: FloatBuffer) -> [UInt32] { b.array.map(\.bitPattern) }
            params = bits(t.policy.parameters); m = bits(t.state.adam.m); v = bits(t.state.adam.v)
            grads = t.policy.gradients.map(bits); adamSteps = t.state.adam.steps; globalStep = t.globalStep
            pending = t.pendingMicroBatches; pendingMetrics = t.pendingMetrics.count; tokens = t.state.numTokens
            referenceHeld = t.reference != nil
        }
        /// The names of the fields that differ (short failure messages).
        func changes(since b: TrainerState) -> [String] {
            let fields: [(String, Bool)] = [
                ("params", params == b.params), ("m", m == b.m), ("v", v == b.v), ("grads", grads == b.grads),
                ("adamSteps", adamSteps == b.adamSteps), ("globalStep", globalStep == b.globalStep),
                ("pending", pending == b.pending), ("pendingMetrics", pendingMetrics == b.pendingMetrics),
                ("tokens", tokens == b.tokens), ("referenceHeld", referenceHeld == b.referenceHeld)]
            return fields.filter { !$0.1 }.map(\.0)
        }
    }

    func testDPOWithANaNPolicyIsRefusedAndChangesNothing() throws {
        let t = try smallTrainer()
        fill(t.policy, "model.embed_tokens.weight", .nan)   // tied: also the LM head
        let before = TrainerState(t)
        let pairs = PreferenceTask.pairs(2, seed: 1)
        assertNumeric(try t.step(pairs), "step")
        assertNumeric(try t.evaluate(pairs), "evaluate")
        assertNumeric(try t.precomputeReferenceLogProbs(pairs), "precompute")
        XCTAssertEqual(TrainerState(t).changes(since: before), [])
        XCTAssertNil(t.policy.pending)
    }

    func testDPOWithANaNReferenceIsRefusedAndChangesNothing() throws {
        let reference = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3)
        fill(reference, "model.layers.0.mlp.down_proj.weight", .nan)
        let t = try smallTrainer(reference: reference)
        let pairs = PreferenceTask.pairs(2, seed: 1)
        _ = try t.step(PreferenceTask.pairs(2, seed: 4).map {   // a step that does not need the reference
            var p = $0; p.refChosenLogps = -5; p.refRejectedLogps = -6; return p
        })
        let before = TrainerState(t)
        assertNumeric(try t.step(pairs), "step")
        assertNumeric(try t.evaluate(pairs), "evaluate")
        XCTAssertEqual(TrainerState(t).changes(since: before), [])
    }

    func testSFTWithANaNModelIsRefused() throws {
        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 2)
        var c = SFTConfig(); c.optimizer.learningRate = 1e-2
        let t = try SFTTrainer(model: model, config: c)
        let batch = [SFTExample(promptIds: [1, 5], completionIds: [6, 2])]
        fill(model, "model.layers.1.self_attn.v_proj.weight", .nan)
        let params = model.parameters.array
        assertNumeric(try t.evaluate(batch), "evaluate")
        assertNumeric(try t.step(batch), "step")
        XCTAssertEqual(t.globalStep, 0)
        XCTAssertEqual(t.pendingMicroBatches, 0)
        XCTAssertEqual(model.parameters.array.map(\.bitPattern), params.map(\.bitPattern))
    }

    // MARK: - Optimizer steps that would make the weights non-finite

    /// weight_decay 1e300 makes the decay factor (1 - lr wd) overflow: the step is refused and the
    /// weights, moments, gradients and counters stay as they were.
    func testOptimizerStepWithNonFiniteResultIsRefused() throws {
        let t = try smallTrainer { $0.optimizer.weightDecay = 1e300; $0.optimizer.gradientAccumulationSteps = 2 }
        try t.accumulate(PreferenceTask.pairs(2, seed: 1))
        try t.accumulate(PreferenceTask.pairs(2, seed: 2))
        let before = TrainerState(t)
        assertNumeric(try t.applyOptimizer(), "apply_optimizer")
        XCTAssertThrowsError(try t.applyOptimizer()) { XCTAssertTrue("\($0)".contains("weight_decay 1e+300"), "\($0)") }
        XCTAssertEqual(TrainerState(t).changes(since: before), [])
        // Through step, with clipping active: the micro-batch step accumulated is taken back too.
        let t2 = try smallTrainer {
            $0.optimizer.weightDecay = 1e300; $0.optimizer.maxGradNorm = 1e-3; $0.optimizer.gradientAccumulationSteps = 2
        }
        try t2.accumulate(PreferenceTask.pairs(2, seed: 1))
        let before2 = TrainerState(t2)
        assertNumeric(try t2.step(PreferenceTask.pairs(2, seed: 2)), "step")
        XCTAssertEqual(TrainerState(t2).changes(since: before2), [])
        // A first step of a fresh trainer: nothing pending, no snapshot kept.
        let t3 = try smallTrainer { $0.optimizer.weightDecay = 1e300 }
        assertNumeric(try t3.step(PreferenceTask.pairs(2, seed: 1)), "first step")
        XCTAssertEqual(t3.pendingMicroBatches, 0)
        XCTAssertEqual(t3.state.numTokens, 0)
        XCTAssertNil(t3.reference)
        XCTAssertEqual(t3.state.adam.steps, 0)
        // SFT: the same refusal, the micro-batch taken back.
        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 2)
        var sc = SFTConfig(); sc.optimizer.weightDecay = 1e300
        let sft = try SFTTrainer(model: model, config: sc)
        let params = model.parameters.array
        assertNumeric(try sft.step([SFTExample(promptIds: [1, 5], completionIds: [6, 2])]), "SFT step")
        XCTAssertEqual(sft.pendingMicroBatches, 0)
        XCTAssertEqual(sft.state.numTokens, 0)
        XCTAssertEqual(sft.state.adam.steps, 0)
        XCTAssertEqual(model.parameters.array, params)
    }

    /// A learning rate of 1e10 (accepted: it is finite) makes the weights huge within a few steps;
    /// every later step is a numeric error, never a crash, and the weights stay finite.
    func testHugeLearningRateGivesNumericErrorsNotACrash() throws {
        for lr in [1e9, 1e10] {
            let t = try smallTrainer { $0.optimizer.learningRate = lr; $0.optimizer.maxGradNorm = 0 }
            var refused = 0
            for s in 0..<6 {
                do { _ = try t.step(PreferenceTask.pairs(2, seed: UInt64(s))) } catch DPOError.numeric { refused += 1 }
                XCTAssertTrue(t.policy.parameters.array.allSatisfy(\.isFinite), "lr \(lr) step \(s)")
            }
            XCTAssertGreaterThan(refused, 0, "lr \(lr)")
            assertNumeric(try t.policy.sequenceLogProbs(Self.completions), "lr \(lr): logps")
        }
    }

    // MARK: - Config validation

    func testTokenIdsOutsideTheVocabularyAreRefused() throws {
        var c = PreferenceTask.config
        XCTAssertNoThrow(try c.validate())
        c.padTokenId = 32; assertInvalid(c, mentions: "pad_token_id")
        c.padTokenId = -1; assertInvalid(c, mentions: "pad_token_id")
        c.padTokenId = 31; XCTAssertNoThrow(try c.validate())
        c.bosTokenId = 40; assertInvalid(c, mentions: "bos_token_id")
        c.bosTokenId = nil; XCTAssertNoThrow(try c.validate())
        c.eosTokenIds = [2, 100]; assertInvalid(c, mentions: "eos_token_id")
        // config.json: a format error naming the field.
        var json = c.json().object!
        json["eos_token_id"] = .number(2)
        json["pad_token_id"] = .number(1000)
        XCTAssertThrowsError(try LlamaConfig(json: .object(json))) { e in
            guard case DPOError.format(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("pad_token_id"), m)
        }
    }

    func testRopeParametersWithNonFiniteOrZeroFrequenciesAreRefused() throws {
        var c = PreferenceTask.config
        for theta in [1e-300, 1e300] {
            c.ropeTheta = theta; assertInvalid(c, mentions: "rope_theta")
        }
        c.ropeTheta = 500_000; XCTAssertNoThrow(try c.validate())
        for factor in [1e-320, 1e-50, 1e60, .infinity] {
            c.ropeScaling = .llama3(factor: factor, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
            assertInvalid(c, mentions: "rope_scaling")
        }
        c.ropeScaling = .llama3(factor: 1e-320, lowFreqFactor: 1e-320, highFreqFactor: 2e-320, originalMaxPositionEmbeddings: 8192)
        assertInvalid(c, mentions: "rope_scaling")
        // Real settings: Llama 3.1 and 3.2.
        for factor in [8.0, 32.0] {
            c.ropeScaling = .llama3(factor: factor, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
            XCTAssertNoThrow(try c.validate())
        }
        c.ropeScaling = .none
        c.ropeTheta = 1e-300
        XCTAssertThrowsError(try LlamaModel(config: c))
    }

    func testLossTypeCountIsCappedLikeTheLossWeights() throws {
        var c = DPOConfig()
        c.lossType = [DPOLossType](repeating: .sigmoid, count: 64)
        XCTAssertNoThrow(try c.validate())
        c.lossType = [DPOLossType](repeating: .sigmoid, count: 100_000)
        XCTAssertThrowsError(try c.validate()) { e in
            guard case DPOError.invalidArgument(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("loss_type"), m)
        }
    }
}
