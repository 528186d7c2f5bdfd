import XCTest
@testable import DPO

final class GenerationTests: XCTestCase {
    /// Greedy decoding equals transformers' `generate(do_sample=False)` on the parity fixtures.
    func testGreedyMatchesTransformers() throws {
        for name in ["gqa_tied", "mha_untied_bias_llama3"] {
            let dir = TestModels.fixturesDirectory() + "/" + name
            let model = try LlamaModel.load(directory: dir + "/model")
            let expected = try SafetensorsFile.open(dir + "/expected.safetensors")
            let batch = try JSON.parse(try readFile(dir + "/batch.json")).object!
            let prompts = batch["sequences"]!.array!.map { $0.object!["prompt_ids"]!.array!.map { Int32($0.int!) } }
            var g = GenerationConfig()
            g.maxNewTokens = 8
            g.eosTokenIds = []
            let out = try model.generate(prompts, config: g)
            for i in prompts.indices {
                XCTAssertEqual(out[i], try expected.floats("greedy.\(i)").map { Int32($0) }, "\(name) prompt \(i)")
            }
        }
    }

    /// KV-cached decoding gives the tokens the full (naive, uncached) forward picks at every step.
    func testCachedDecodingEqualsFullForward() throws {
        let model = try TestModels.model(TestModels.mhaUntiedBias)
        let prompt: [Int32] = [3, 7, 1, 9, 4]
        var g = GenerationConfig(); g.maxNewTokens = 6; g.eosTokenIds = []
        let cached = try model.generate([prompt], config: g)[0]
        var seq = prompt
        let naive = NaiveLlama(model: model)
        for _ in 0..<6 {
            let z = naive.logits(PackedTokens(sequences: [seq]), row: seq.count - 1)
            seq.append(Int32(z.firstIndex(of: z.max()!)!))
        }
        XCTAssertEqual(cached, Array(seq[prompt.count...]))
    }

    func testBatchEqualsOneByOneAndStopsAtEOS() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let prompts: [[Int32]] = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
        var g = GenerationConfig(); g.maxNewTokens = 5; g.eosTokenIds = []
        let batch = try model.generate(prompts, config: g)
        for (i, p) in prompts.enumerated() { XCTAssertEqual(batch[i], try model.generate([p], config: g)[0]) }
        // Make the second token of prompt 0 an EOS: generation stops right after it.
        g.eosTokenIds = [batch[0][1]]
        let stopped = try model.generate([prompts[0]], config: g)[0]
        XCTAssertEqual(stopped, Array(batch[0].prefix(2)))
    }

    func testSamplingIsSeededAndTopKOneIsGreedy() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        var g = GenerationConfig(); g.maxNewTokens = 12; g.eosTokenIds = []; g.temperature = 1.3; g.seed = 5
        let a = try model.generate([[1, 2]], config: g), b = try model.generate([[1, 2]], config: g)
        XCTAssertEqual(a, b)
        g.seed = 6
        XCTAssertNotEqual(a, try model.generate([[1, 2]], config: g), "a different seed gives a different draw")
        g.topK = 1
        var greedy = GenerationConfig(); greedy.maxNewTokens = 12; greedy.eosTokenIds = []
        XCTAssertEqual(try model.generate([[1, 2]], config: g), try model.generate([[1, 2]], config: greedy))
        g.topK = 0; g.topP = 1e-6
        XCTAssertEqual(try model.generate([[1, 2]], config: g), try model.generate([[1, 2]], config: greedy))
    }

    func testRejectsBadArguments() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        XCTAssertThrowsError(try model.generate([[]], config: GenerationConfig()))
        XCTAssertThrowsError(try model.generate([[99]], config: GenerationConfig())) { XCTAssertTrue("\($0)".contains("99")) }
        var g = GenerationConfig(); g.topP = 0
        XCTAssertThrowsError(try model.generate([[1]], config: g)) { XCTAssertTrue("\($0)".contains("top_p")) }
        g = GenerationConfig(); g.temperature = -1
        XCTAssertThrowsError(try model.generate([[1]], config: g)) { XCTAssertTrue("\($0)".contains("temperature")) }
    }
}
