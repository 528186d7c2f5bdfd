import XCTest
@testable import DPO

/// The README's Swift example of real models, run as written (README "Real models").
final class RealModelReadmeTests: XCTestCase {
    func testReadmeSwiftExample() throws {
        let path = try TestModels.smolLM2GGUF()
        let output = try makeScratchDirectory() + "/smollm2-q8.gguf"

        let tok = try Tokenizer.load(path: path)
        let model = try LlamaModel.load(path: path)
        let prompt = try tok.chatTemplateIDs([ChatMessage(role: "user", content: "What is the capital of France?")],
                                             addGenerationPrompt: true)
        var generation = GenerationConfig()
        generation.maxNewTokens = 24
        let answer = try model.generate([prompt], config: generation)[0]
        XCTAssertEqual(try tok.decode(answer, skipSpecialTokens: true), "The capital of France is Paris.")
        try model.saveGGUF(path: output, type: .q8_0)

        // The saved file carries the tokenizer and answers the same.
        let back = try LlamaModel.load(path: output)
        XCTAssertEqual(try Tokenizer.load(path: output).encode("Paris"), tok.encode("Paris"))
        XCTAssertEqual(try back.generate([prompt], config: generation)[0], answer)
    }
}
