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

    /// Sampling with repeated prompts (prefilled once, caches copied) and distinct ones (prefilled
    /// together) draws what a naive uncached forward of every sequence draws with the same
    /// generator: the first token of each prompt in prompt order, then one token per active
    /// sequence per step.
    func testSampledBatchWithRepeatedPromptsEqualsNaiveDraws() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let naive = NaiveLlama(model: model)
        let a: [Int32] = [1, 2, 3], b: [Int32] = [4, 5], c: [Int32] = [6, 7, 8, 9, 10]
        let prompts = [a, b, a, c, a, b]
        var g = GenerationConfig(); g.maxNewTokens = 7; g.temperature = 0.9; g.seed = 11; g.eosTokenIds = [5]
        let out = try model.generate(prompts, config: g)

        var rng = Xoshiro256(seed: g.seed)
        var sampler = TokenSampler(vocabSize: model.config.vocabSize)
        func draw(_ seq: [Int32]) -> Int32 {
            let z = naive.logits(PackedTokens(sequences: [seq]), row: seq.count - 1).map { Float($0) }
            return z.withUnsafeBufferPointer { sampler.sample($0.baseAddress!, config: g, rng: &rng) }
        }
        var seqs = prompts, expected = prompts.map { _ in [Int32]() }
        var next = prompts.map(draw), active = Array(prompts.indices)
        for _ in 0..<g.maxNewTokens {
            active = active.filter { i in
                expected[i].append(next[i]); seqs[i].append(next[i])
                return next[i] != 5 && expected[i].count < g.maxNewTokens
            }
            for i in active { next[i] = draw(seqs[i]) }
        }
        XCTAssertEqual(out, expected)
        XCTAssertNotEqual(out[0], out[2], "repeated prompts get their own draws")
    }

    /// Prompts longer together than one prefill group (and one longer than a group alone) give
    /// what each gives alone.
    func testPrefillGroupsEqualOneByOne() throws {
        let model = try TestModels.model(TestModels.mhaUntiedBias)
        var rng = Xoshiro256(seed: 3)
        let prompts = [300, 300, 20, 600, 20].map { n in (0..<n).map { _ in Int32(rng.next() % 20) } }
        XCTAssertGreaterThan(prompts.map(\.count).reduce(0, +), 2 * GenerationWorkspace.prefillTokens)
        var g = GenerationConfig(); g.maxNewTokens = 3; g.eosTokenIds = []
        let batch = try model.generate(prompts, config: g)
        for (i, p) in prompts.enumerated() { XCTAssertEqual(batch[i], try model.generate([p], config: g)[0], "prompt \(i)") }
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
