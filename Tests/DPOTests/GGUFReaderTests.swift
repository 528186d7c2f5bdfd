import XCTest
@testable import DPO

/// The GGUF header reader on the real SmolLM2 file (values as gguf-py's GGUFReader reports them).
final class GGUFReaderTests: XCTestCase {
    /// The real model file (TestModels.smolLM2GGUF).
    static func smolLM2() throws -> String { try TestModels.smolLM2GGUF() }

    func testSmolLM2HeaderMatchesGGUFPy() throws {
        let path = try GGUFReaderTests.smolLM2()
        XCTAssertTrue(GGUFFile.isGGUF(path: path))
        let file = try GGUFFile.open(path: path)
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.alignment, 32)
        XCTAssertEqual(file.metadata.count, 33)
        XCTAssertEqual(file.metadata.keys.first, "general.architecture")
        XCTAssertEqual(file.metadata.keys.last, "general.quantization_version")
        XCTAssertEqual(file.metadata["general.architecture"], .string("llama"))
        XCTAssertEqual(file.metadata["llama.block_count"], .uint32(30))
        XCTAssertEqual(file.metadata["llama.rope.freq_base"], .float32(100000))
        XCTAssertEqual(file.metadata["llama.attention.layer_norm_rms_epsilon"], .float32(9.999999747378752e-06))
        XCTAssertEqual(file.metadata["general.languages"], .array(.string, [.string("en")]))
        XCTAssertEqual(file.metadata["tokenizer.ggml.add_bos_token"], .bool(false))
        XCTAssertEqual(file.metadata["tokenizer.ggml.tokens"]?.strings?.count, 49152)
        XCTAssertEqual(file.metadata["tokenizer.ggml.merges"]?.array?.count, 48900)
        XCTAssertEqual(file.metadata["tokenizer.ggml.token_type"]?.type, .array)
        XCTAssertEqual(file.tensors.count, 272)
        let embed = try XCTUnwrap(file.tensor(named: "token_embd.weight"))
        XCTAssertEqual(embed.dimensions, [576, 49152])
        XCTAssertEqual(embed.shape, [49152, 576])
        XCTAssertEqual(embed.type, .Q8_0)
        XCTAssertEqual(embed.offset, 1785664)
        XCTAssertEqual(embed.byteCount, 576 * 49152 / 32 * 34)
        XCTAssertEqual(file.tensor(named: "blk.0.ffn_down.weight")?.type.name, "Q4_1")
        XCTAssertEqual(file.tensor(named: "blk.0.ffn_down.weight")?.offset, 31868992)
        XCTAssertEqual(file.tensors.filter { $0.type == .F32 }.count, 61)
        XCTAssertNil(file.tensor(named: "output.weight"))
    }
}
