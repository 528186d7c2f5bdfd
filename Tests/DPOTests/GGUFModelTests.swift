import XCTest
@testable import DPO

/// GGUF models load as the model transformers builds from the same file: tiny models written as
/// llama.cpp's converter writes them (tools/make_gguf_fixtures.py) and the real SmolLM2 Q4_1.
final class GGUFModelTests: XCTestCase {
    static func modelPath(_ name: String) -> String { "\(GGUFFixtureTests.directory)/models/\(name).gguf" }

    /// Per-token log-probs and greedy tokens against transformers (`from_pretrained(gguf_file=)`).
    func checkAgainstTransformers(_ name: String, tolerance: Float = 2e-5) throws -> LlamaModel {
        let model = try LlamaModel.load(ggufFile: GGUFModelTests.modelPath(name))
        let expected = try XCTUnwrap(try JSON.parse(try readFile("\(GGUFFixtureTests.directory)/models/\(name).json")).object)
        let sequences = expected["sequences"]!.array!.map { $0.array!.map { Int32($0.int!) } }
        let logps = expected["logps"]!.array!.map { $0.array!.map { Float($0.double!) } }
        var worst: Float = 0
        for (ids, want) in zip(sequences, logps) {
            let rows = (0..<ids.count - 1).map(Int32.init)
            let out = try model.forward(PackedTokens(sequences: [ids]), head: HeadQuery(rows: rows, labels: Array(ids.dropFirst())),
                                        keepActivations: false)
            XCTAssertEqual(out.logps.count, want.count)
            for (a, b) in zip(out.logps, want) { worst = max(worst, abs(a - b)) }
        }
        print("\(name): largest per-token log-prob deviation from transformers \(worst)")
        XCTAssertLessThanOrEqual(worst, tolerance, "\(name): largest log-prob deviation \(worst)")
        var g = GenerationConfig()
        g.maxNewTokens = 8
        g.eosTokenIds = []
        let prompts = expected["greedy_prompts"]!.array!.map { $0.array!.map { Int32($0.int!) } }
        let greedy = expected["greedy"]!.array!.map { $0.array!.map { Int32($0.int!) } }
        XCTAssertEqual(try model.generate(prompts, config: g), greedy, name)
        return model
    }

    func testLlamaGQAUntiedF32MatchesTransformers() throws {
        let model = try checkAgainstTransformers("llama_gqa_untied")
        XCTAssertEqual(model.config.modelType, "llama")
        XCTAssertFalse(model.config.tieWordEmbeddings)
        XCTAssertEqual(model.config.numKeyValueHeads, 2)
        XCTAssertEqual(model.config.rmsNormEps, Double(Float(1e-5)))
        XCTAssertEqual(model.config.maxPositionEmbeddings, 128)
        XCTAssertEqual(model.ggufMetadata?["general.name"], .string("llama_gqa_untied"))
    }

    func testLlamaQ8_0MatchesTransformers() throws {
        let model = try checkAgainstTransformers("llama_gqa_q8")
        // The Q8_0 file holds the same model as the F32 one, rounded: close but not equal.
        let f32 = try LlamaModel.load(ggufFile: GGUFModelTests.modelPath("llama_gqa_untied"))
        let a = model.parameter("model.layers.0.self_attn.q_proj.weight")!, b = f32.parameter("model.layers.0.self_attn.q_proj.weight")!
        XCTAssertNotEqual(Array(a), Array(b))
        for i in 0..<a.count { XCTAssertEqual(a[i], b[i], accuracy: 0.01) }
    }

    func testQwen2TiedWithBiasesMatchesTransformers() throws {
        let model = try checkAgainstTransformers("qwen2_tied_bias")
        XCTAssertEqual(model.config.modelType, "qwen2")
        XCTAssertTrue(model.config.tieWordEmbeddings)
        XCTAssertEqual(model.config.ropeTheta, 100000)
        XCTAssertNotNil(model.parameter("model.layers.1.self_attn.k_proj.bias"))
    }

    func testLoadPathAcceptsAFileAFolderWithOneGGUFOrAModelFolder() throws {
        let dir = try makeScratchDirectory()
        let source = GGUFModelTests.modelPath("qwen2_tied_bias")
        try writeFileAtomically(dir + "/m.gguf", bytes: try readFile(source, limit: 1 << 30))
        let fromFile = try LlamaModel.load(path: source)
        let fromFolder = try LlamaModel.load(path: dir)
        XCTAssertEqual(fromFile.parameters.array, fromFolder.parameters.array)
        try writeFileAtomically(dir + "/n.gguf", bytes: try readFile(source, limit: 1 << 30))
        expectDPOError(["2 .gguf files", "m.gguf, n.gguf"]) { _ = try LlamaModel.load(path: dir) }
        expectDPOError(["no config.json and no .gguf"]) { _ = try LlamaModel.load(path: try makeScratchDirectory()) }
        expectDPOError(["does not exist"]) { _ = try LlamaModel.load(path: dir + "/missing.gguf") }
        let hf = TestModels.fixturesDirectory() + "/gqa_tied/model"
        XCTAssertEqual(try LlamaModel.load(path: hf).parameters.array, try LlamaModel.load(directory: hf).parameters.array)
    }

    /// SmolLM2-135M-Instruct Q4_1: summed completion log-probs of 8 chat pairs and 16 greedy
    /// tokens of 4 chat prompts, as transformers computes them from the same GGUF.
    func testSmolLM2Q4_1MatchesTransformers() throws {
        let path = try GGUFReaderTests.smolLM2()
        let model = try LlamaModel.load(path: path)
        XCTAssertEqual(model.config.numHiddenLayers, 30)
        XCTAssertEqual(model.config.vocabSize, 49152)
        XCTAssertTrue(model.config.tieWordEmbeddings)
        XCTAssertEqual(model.config.bosTokenId, 1)
        XCTAssertEqual(model.config.eosTokenIds, [2])
        let expected = try XCTUnwrap(try JSON.parse(try readFile("\(GGUFFixtureTests.directory)/smollm2.json")).object)
        let pairs = expected["pairs"]!.array!.map { $0.object! }
        XCTAssertGreaterThanOrEqual(pairs.count, 8)
        let items = pairs.map { (prompt: $0["prompt_ids"]!.array!.map { Int32($0.int!) },
                                 completion: $0["completion_ids"]!.array!.map { Int32($0.int!) }) }
        let got = try model.sequenceLogProbs(items)
        var worst = 0.0
        for (g, p) in zip(got, pairs) {
            let want = p["logp"]!.double!
            worst = max(worst, abs(g - want) / max(1, abs(want)))
        }
        print("SmolLM2: largest relative deviation of summed completion log-probs from transformers \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-4, "largest relative log-prob deviation \(worst): \(got)")
        let gens = expected["greedy"]!.array!.map { $0.object! }
        var g = GenerationConfig()
        g.maxNewTokens = 16
        g.eosTokenIds = []
        let out = try model.generate(gens.map { $0["prompt_ids"]!.array!.map { Int32($0.int!) } }, config: g)
        XCTAssertEqual(out, gens.map { $0["tokens"]!.array!.map { Int32($0.int!) } })
    }
}
