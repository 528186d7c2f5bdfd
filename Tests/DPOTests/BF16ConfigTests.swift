@testable import DPO
import XCTest

/// TRL's `bf16` in DPOConfig and SFTConfig: the JSON field every door uses, the trainers setting
/// `LlamaModel.bf16` on the policy and the reference, checkpoints keeping it, and KV-cached
/// generation computing as the training forward does.
final class BF16ConfigTests: XCTestCase {
    func testBF16IsAConfigFieldWithTRLsName() throws {
        XCTAssertFalse(DPOConfig().bf16)
        XCTAssertFalse(SFTConfig().bf16)
        XCTAssertEqual(DPOConfig().jsonObject["bf16"], .bool(false))
        XCTAssertTrue(DPOConfig.fieldNames.contains("bf16"))

        let d = try DPOTrainingConfig(json: ["bf16": .bool(true), "beta": .number(0.2)])
        XCTAssertTrue(d.trainer.bf16)
        XCTAssertEqual(d.jsonObject["bf16"], .bool(true))
        XCTAssertEqual(try DPOTrainingConfig(json: d.jsonObject), d)
        XCTAssertTrue(try DPOConfig(json: ["bf16": .bool(true)]).bf16)

        let s = try SFTTrainingConfig(json: ["bf16": .bool(true), "max_length": .number(64)])
        XCTAssertTrue(s.trainer.bf16)
        XCTAssertEqual(s.jsonObject["bf16"], .bool(true))
        XCTAssertEqual(try SFTTrainingConfig(json: s.jsonObject), s)
        XCTAssertTrue(try SFTConfig(json: ["bf16": .bool(true)]).bf16)

        expectDPOError(["bf16", "true or false"]) { _ = try DPOTrainingConfig(json: ["bf16": .number(1)]) }
        expectDPOError(["bf16", "true or false"]) { _ = try SFTTrainingConfig(json: ["bf16": .string("yes")]) }
    }

    func dpoConfig(bf16: Bool) -> DPOConfig {
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-3
        c.bf16 = bf16
        return c
    }

    /// The config decides: bf16 on sets both models, off clears a flag set by hand; the snapshot
    /// reference computes as the policy.
    func testTrainerSetsThePrecisionOfPolicyAndReference() throws {
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3)
        let ref = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 4)
        _ = try DPOTrainer(policy: policy, reference: ref, config: dpoConfig(bf16: true))
        XCTAssertTrue(policy.bf16)
        XCTAssertTrue(ref.bf16)
        _ = try DPOTrainer(policy: policy, reference: ref, config: dpoConfig(bf16: false))
        XCTAssertFalse(policy.bf16)
        XCTAssertFalse(ref.bf16)

        let snapshot = try DPOTrainer(policy: policy, reference: nil, config: dpoConfig(bf16: true))
        _ = try snapshot.step(PreferenceTask.pairs(4, seed: 1))
        XCTAssertTrue(try XCTUnwrap(snapshot.reference).bf16)

        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5)
        var sc = SFTConfig()
        sc.bf16 = true
        _ = try SFTTrainer(model: model, config: sc)
        XCTAssertTrue(model.bf16)
    }

    /// A bf16 run's checkpoint restores bf16 into a trainer created without it, and the resumed
    /// steps equal the uninterrupted run's bit for bit (so the products really run in bf16 again).
    func testCheckpointKeepsBF16AndResumesBitIdentically() throws {
        let dir = try makeScratchDirectory()
        func models() throws -> (LlamaModel, LlamaModel) {
            (try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3),
             try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 4))
        }
        let batches = (0..<4).map { PreferenceTask.pairs(8, seed: UInt64(40 + $0)) }
        let (p1, r1) = try models()
        let full = try DPOTrainer(policy: p1, reference: r1, config: dpoConfig(bf16: true))
        var losses: [Double] = []
        for (i, b) in batches.enumerated() {
            losses.append(try full.step(b).metrics.loss)
            if i == 1 { try full.saveCheckpoint(directory: dir + "/dpo") }
        }
        let (p2, r2) = try models()
        let resumed = try DPOTrainer(policy: p2, reference: r2, config: dpoConfig(bf16: false))
        try resumed.loadCheckpoint(directory: dir + "/dpo")
        XCTAssertTrue(resumed.config.bf16)
        XCTAssertTrue(p2.bf16)
        XCTAssertTrue(r2.bf16)
        let tail = try batches[2...].map { try resumed.step($0).metrics.loss }
        XCTAssertEqual(tail, Array(losses[2...]))
        XCTAssertEqual(Array(p1.parameters.buffer), Array(p2.parameters.buffer))

        // The same run in fp32 differs: the comparison above can tell the precisions apart.
        let (p3, r3) = try models()
        let fp32 = try DPOTrainer(policy: p3, reference: r3, config: dpoConfig(bf16: false))
        let fp32Losses = try batches.map { try fp32.step($0).metrics.loss }
        XCTAssertNotEqual(fp32Losses[2...], losses[2...])

        // SFT: the checkpoint's config holds bf16 and restores it.
        var sc = SFTConfig()
        sc.bf16 = true
        sc.optimizer.learningRate = 1e-3
        let examples = PreferenceTask.pairs(8, seed: 9).map { SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds) }
        let m1 = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 6)
        let sft = try SFTTrainer(model: m1, config: sc)
        _ = try sft.step(examples)
        try sft.saveCheckpoint(directory: dir + "/sft")
        let m2 = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 6)
        let sft2 = try SFTTrainer(model: m2, config: SFTConfig())
        XCTAssertFalse(m2.bf16)
        try sft2.loadCheckpoint(directory: dir + "/sft")
        XCTAssertTrue(sft2.config.bf16)
        XCTAssertTrue(m2.bf16)
        XCTAssertEqual(sft2.configFields["bf16"], .bool(true))
        XCTAssertEqual(try sft2.step(examples).metrics.loss, try sft.step(examples).metrics.loss)
    }

    /// Log-softmax of the last prompt position: KV-cached generation's logits (`extend`) and the
    /// training forward's log-probs of every token at that row.
    func lastRowLogProbs(_ model: LlamaModel, _ prompt: [Int32]) throws -> (cached: [Double], forward: [Double]) {
        let V = model.config.vocabSize
        let cache = KVCache(layers: model.config.numHiddenLayers, kvWidth: model.attentionShape.kvWidth, capacity: prompt.count)
        let work = try GenerationWorkspace(model: model, promptLengths: [prompt.count], maxNewTokens: 0)
        let cached = try model.extend([cache], tokens: [prompt], work: work)
        let logits = (0..<V).map { Double(cached[$0]) }
        let m = logits.max()!
        let lse = m + log(logits.reduce(0) { $0 + exp($1 - m) })
        let row = Int32(prompt.count - 1)
        let head = HeadQuery(rows: [Int32](repeating: row, count: V), labels: (0..<V).map { Int32($0) })
        let out = try model.forward(PackedTokens(sequences: [prompt]), head: head, keepActivations: false)
        return (logits.map { $0 - lse }, out.logps.map(Double.init))
    }

    /// With bf16 set, every product of KV-cached generation (linear layers, attention against the
    /// cache, LM head) takes bf16 inputs as the training forward does: the two agree to fp32
    /// summation order, much closer than either is to fp32.
    func testGenerationComputesInBF16LikeTheTrainingForward() throws {
        for config in [TestModels.gqaTied, TestModels.mhaUntiedBias] {
            let model = try TestModels.model(config)
            let prompt: [Int32] = [3, 7, 1, 9, 4, 11, 5, 2, 8, 6, 10, 12]
            let fp32 = try lastRowLogProbs(model, prompt)
            model.bf16 = true
            let bf16 = try lastRowLogProbs(model, prompt)
            func maxDiff(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }
            let same = maxDiff(bf16.cached, bf16.forward), precision = maxDiff(bf16.forward, fp32.forward)
            print("\(config.modelType): bf16 cached vs forward \(same), bf16 vs fp32 \(precision)")
            XCTAssertLessThan(maxDiff(fp32.cached, fp32.forward), 1e-4)
            XCTAssertGreaterThan(precision, 1e-3, "bf16 changed nothing")
            XCTAssertLessThan(same, precision / 20, "generation's products are not the training forward's bf16 products")
        }
    }
}
