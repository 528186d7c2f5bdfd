import XCTest
@testable import DPO

/// Golden parity with Hugging Face transformers 5.23 (fixtures made by tools/make_fixtures.py):
/// checkpoints saved by `save_pretrained`, per-token log-probs and head statistics, and the
/// gradient of S = sum w * logp over completion tokens for every parameter.
final class TransformersParityTests: XCTestCase {
    struct Fixture {
        let model: LlamaModel
        let packed: PackedTokens
        let head: HeadQuery
        let weights: [Float]
        let expected: SafetensorsFile
    }

    func loadFixture(_ name: String, modelDir: String = "model") throws -> Fixture {
        let dir = TestModels.fixturesDirectory() + "/" + name
        let model = try LlamaModel.load(directory: dir + "/" + modelDir)
        let batch = try JSON.parse(try readFile(dir + "/batch.json")).object!
        var sequences: [[Int32]] = [], rows: [Int32] = [], labels: [Int32] = []
        var start = 0
        for item in batch["sequences"]!.array! {
            let prompt = item.object!["prompt_ids"]!.array!.map { Int32($0.int!) }
            let completion = item.object!["completion_ids"]!.array!.map { Int32($0.int!) }
            sequences.append(prompt + completion)
            for j in 0..<completion.count {
                rows.append(Int32(start + prompt.count - 1 + j))
                labels.append(completion[j])
            }
            start += prompt.count + completion.count
        }
        let weights = batch["weights"]!.array!.flatMap { $0.array!.map { Float($0.double!) } }
        return Fixture(model: model, packed: PackedTokens(sequences: sequences),
                       head: HeadQuery(rows: rows, labels: labels), weights: weights,
                       expected: try SafetensorsFile.open(dir + "/expected.safetensors"))
    }

    func checkOutputs(_ f: Fixture) throws {
        let out = try f.model.forward(f.packed, head: f.head, keepActivations: true)
        let checks: [(String, [Float])] = [("logps", out.logps), ("entropy", out.entropy),
                                           ("mean_logit", out.meanLogit), ("log_sum_p2", out.logSumP2)]
        for (name, values) in checks {
            let expected = try f.expected.floats(name)
            XCTAssertEqual(values.count, expected.count, name)
            for i in 0..<expected.count { XCTAssertEqual(values[i], expected[i], accuracy: 1e-4, "\(name)[\(i)]") }
        }
        XCTAssertEqual(out.argmaxHit, try f.expected.floats("argmax_hit"))

        try f.model.zeroGradients()
        try f.model.backward(dlogp: f.weights)
        var largest: Float = 0
        for spec in f.model.layout.tensors {
            largest = max(largest, try f.expected.floats("grad." + spec.name).map(abs).max()!)
        }
        var worst: Float = 0
        for spec in f.model.layout.tensors {
            let expected = try f.expected.floats("grad." + spec.name)
            let got = f.model.gradient(spec.name)!
            for i in 0..<expected.count { worst = max(worst, abs(got[i] - expected[i])) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-4 * largest, "largest gradient deviation \(worst), largest entry \(largest)")
    }

    func testGQATiedMatchesTransformers() throws { try checkOutputs(try loadFixture("gqa_tied")) }

    func testMHAUntiedBiasLlama3MatchesTransformers() throws {
        let f = try loadFixture("mha_untied_bias_llama3")
        XCTAssertEqual(f.model.config.ropeScaling,
                       .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32))
        XCTAssertEqual(f.model.config.eosTokenIds, [2, 3])
        try checkOutputs(f)
    }

    func testBF16CheckpointLoadsAsFloat32() throws {
        let f = try loadFixture("gqa_tied", modelDir: "model_bf16")
        let out = try f.model.forward(f.packed, head: f.head, keepActivations: false)
        let expected = try f.expected.floats("logps_bf16")
        for i in 0..<expected.count { XCTAssertEqual(out.logps[i], expected[i], accuracy: 1e-4) }
    }

    func testShardedCheckpointEqualsSingleFile() throws {
        let single = try loadFixture("gqa_tied").model
        let sharded = try loadFixture("gqa_tied", modelDir: "model_sharded").model
        XCTAssertEqual(single.parameters.array, sharded.parameters.array)
    }
}
