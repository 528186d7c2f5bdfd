import Foundation
import XCTest
@testable import DPO

/// `saveGGUF`: what it writes reads back as the model (exactly for f32, rounded as gguf-py rounds
/// for f16/bf16/q8_0), with the config and the source file's non-architecture metadata.
final class GGUFWriterTests: XCTestCase {
    /// GQA, untied, rows a multiple of 32 (so Q8_0 applies to every matrix).
    static var config: LlamaConfig {
        var c = LlamaConfig(vocabSize: 40, hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2)
        c.rmsNormEps = 1e-5
        c.ropeTheta = 50000
        c.maxPositionEmbeddings = 256
        c.initializerRange = 0.3
        return c
    }

    /// bf16 rounding to nearest even, computed from the two neighbouring bf16 values.
    static func bf16(_ x: Float) -> Float {
        let down = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
        let up = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
        let (dd, du) = (abs(Double(x) - Double(down)), abs(Double(up) - Double(x)))
        if dd != du { return dd < du ? down : up }
        return (down.bitPattern >> 16) & 1 == 0 ? down : up
    }

    func testSavesReadBackAsTheRoundedModel() throws {
        let model = try TestModels.model(GGUFWriterTests.config, seed: 5)
        let dir = try makeScratchDirectory()
        for type in GGUFSaveType.allCases {
            let path = "\(dir)/m-\(type.rawValue).gguf"
            try model.saveGGUF(path: path, type: type)
            let file = try GGUFFile.open(path: path)
            XCTAssertEqual(file.version, 3)
            XCTAssertEqual(file.alignment, 32)
            XCTAssertEqual(file.metadata["general.architecture"], .string("llama"))
            XCTAssertEqual(file.metadata["general.file_type"], .uint32(["f32": 0, "f16": 1, "bf16": 32, "q8_0": 7][type.rawValue]!))
            XCTAssertEqual(file.tensor(named: "blk.1.attn_q.weight")?.type.name, type.rawValue.uppercased())
            XCTAssertEqual(file.tensor(named: "blk.1.attn_norm.weight")?.type, .F32)
            XCTAssertEqual(file.tensor(named: "output.weight")?.shape, [40, 64])
            let back = try LlamaModel.load(ggufFile: path)
            // GGUF stores rms_norm_eps (and rope_theta) as fp32 and has no initializer_range.
            var expected = model.config.normalized
            expected.rmsNormEps = Double(Float(expected.rmsNormEps))
            expected.initializerRange = LlamaConfig().initializerRange
            XCTAssertEqual(back.config.normalized, expected, type.rawValue)
            for spec in model.layout.tensors {
                let a = model.parameter(spec.name)!, b = back.parameter(spec.name)!
                if spec.shape.count == 1 || type == .f32 {
                    XCTAssertEqual(Array(a), Array(b), "\(type) \(spec.name)")
                    continue
                }
                switch type {
                case .f16: XCTAssertEqual(a.map { Float(Float16($0)) }, Array(b), spec.name)
                case .bf16: XCTAssertEqual(a.map(GGUFWriterTests.bf16), Array(b), spec.name)
                default:
                    // Q8_0: each block is q * d with q an integer in [-127, 127], d = fp16(max|x| / 127).
                    for blockStart in stride(from: 0, to: a.count, by: 32) {
                        let amax = a[blockStart..<blockStart + 32].map(abs).max()!
                        let d = Float(Float16(amax / 127))
                        for j in blockStart..<blockStart + 32 {
                            let q = b[j] / d
                            XCTAssertEqual(q, q.rounded(), "\(spec.name)[\(j)]")
                            XCTAssertLessThanOrEqual(abs(q), 127)
                            XCTAssertLessThanOrEqual(abs(b[j] - a[j]), d * 0.5001 + amax * 1e-3, "\(spec.name)[\(j)]")
                        }
                    }
                }
            }
        }
    }

    func testQwen2TiedAndLlama3RopeRoundTrip() throws {
        let dir = try makeScratchDirectory()
        let qwen = try LlamaModel.load(ggufFile: GGUFModelTests.modelPath("qwen2_tied_bias"))
        try qwen.saveGGUF(path: dir + "/q.gguf", type: .f32)
        let back = try LlamaModel.load(ggufFile: dir + "/q.gguf")
        XCTAssertEqual(back.config.normalized, qwen.config.normalized)
        XCTAssertEqual(back.parameters.array, qwen.parameters.array)
        XCTAssertNil(try GGUFFile.open(path: dir + "/q.gguf").tensor(named: "output.weight"))

        var c = GGUFWriterTests.config
        c.ropeTheta = 500_000
        c.ropeScaling = ggufKnownLlama3Scalings[1]
        let llama3 = try TestModels.model(c)
        try llama3.saveGGUF(path: dir + "/l3.gguf", type: .f32)
        XCTAssertEqual(try GGUFFile.open(path: dir + "/l3.gguf").tensor(named: "rope_freqs.weight")?.shape, [8])
        let l3 = try LlamaModel.load(ggufFile: dir + "/l3.gguf")
        XCTAssertEqual(l3.config.ropeScaling, c.ropeScaling)
        XCTAssertEqual(l3.parameters.array, llama3.parameters.array)
        // A llama3 scaling that is none of the known parameter sets is written, and refused on load.
        c.ropeScaling = .llama3(factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64)
        try TestModels.model(c).saveGGUF(path: dir + "/odd.gguf", type: .f32)
        expectDPOError(["rope_freqs.weight", "matches no llama3 rope scaling"]) { _ = try LlamaModel.load(ggufFile: dir + "/odd.gguf") }
    }

    func testMetadataIsCarriedOverAndExtended() throws {
        let dir = try makeScratchDirectory()
        let model = try LlamaModel.load(ggufFile: GGUFModelTests.modelPath("llama_gqa_untied"))
        var extra = GGUFMetadata()
        extra["tokenizer.ggml.model"] = .string("gpt2")
        extra["tokenizer.ggml.tokens"] = .array(.string, (0..<64).map { .string("t\($0)") })
        extra["tokenizer.ggml.bos_token_id"] = .uint32(5)
        extra["llama.block_count"] = .uint32(99)  // architecture keys are the writer's own
        try model.saveGGUF(path: dir + "/a.gguf", type: .f16, metadata: extra, name: "renamed")
        let a = try GGUFFile.open(path: dir + "/a.gguf")
        XCTAssertEqual(a.metadata["general.name"], .string("renamed"))
        XCTAssertEqual(a.metadata["llama.block_count"], .uint32(2))
        XCTAssertEqual(a.metadata["tokenizer.ggml.bos_token_id"], .uint32(5))
        XCTAssertEqual(a.metadata["tokenizer.ggml.eos_token_id"], .uint32(2))  // from the source file
        XCTAssertEqual(a.metadata["tokenizer.ggml.tokens"], extra["tokenizer.ggml.tokens"])
        XCTAssertEqual(a.metadata.keys.first, "general.architecture")
        XCTAssertEqual(a.metadata.keys.last, "general.quantization_version")
        // A second round trip keeps everything.
        let reloaded = try LlamaModel.load(ggufFile: dir + "/a.gguf")
        XCTAssertEqual(reloaded.config.bosTokenId, 5)
        try reloaded.saveGGUF(path: dir + "/b.gguf", type: .f16)
        let b = try GGUFFile.open(path: dir + "/b.gguf")
        XCTAssertEqual(b.metadata, a.metadata)
        XCTAssertEqual(try readFile(dir + "/a.gguf", limit: 1 << 30), try readFile(dir + "/b.gguf", limit: 1 << 30))

        var bad = GGUFMetadata()
        bad["tokenizer.x"] = .array(.uint32, [.string("no")])
        expectDPOError(["tokenizer.x", "array of UINT32 holds a STRING"]) {
            try model.saveGGUF(path: dir + "/c.gguf", type: .f32, metadata: bad)
        }
        XCTAssertFalse(fileExists(dir + "/c.gguf"))
        XCTAssertEqual(GGUFSaveType(name: "q8_0"), .q8_0)
        XCTAssertNil(GGUFSaveType(name: "q4_0"))
    }

    /// A save onto a path holding a FIFO, device or directory is refused and leaves it alone
    /// (rename(2) used to replace the node: as root, a save to /dev/null replaced the device).
    func testSaveOntoANonRegularFileIsRefused() throws {
        let dir = try makeScratchDirectory()
        let model = try TestModels.model(TestModels.gqaTied)
        XCTAssertEqual(mkfifo(dir + "/fifo.gguf", 0o600), 0)
        expectDPOError(["fifo.gguf", "a FIFO, not a regular file"]) { try model.saveGGUF(path: dir + "/fifo.gguf", type: .f32) }
        var st = stat()
        XCTAssertEqual(lstat(dir + "/fifo.gguf", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO)
        XCTAssertEqual(symlink(dir + "/fifo.gguf", dir + "/link.gguf"), 0)
        expectDPOError(["link.gguf", "a FIFO"]) { try model.saveGGUF(path: dir + "/link.gguf", type: .f32) }
        try makeDirectory(dir + "/d.gguf")
        expectDPOError(["d.gguf", "a directory"]) { try model.saveGGUF(path: dir + "/d.gguf", type: .f32) }
        XCTAssertTrue(isDirectory(dir + "/d.gguf"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["d.gguf", "fifo.gguf", "link.gguf"])
        // A regular file is replaced.
        try writeFileAtomically(dir + "/r.gguf", bytes: [1, 2, 3])
        try model.saveGGUF(path: dir + "/r.gguf", type: .f32)
        XCTAssertTrue(GGUFFile.isGGUF(path: dir + "/r.gguf"))
    }

    /// The token list must have vocab_size entries (llama.cpp sizes token_embd by it): a larger
    /// tokenizer is refused, a smaller one padded as convert_hf_to_gguf.py pads it. Both used to
    /// be written as they were, giving files llama.cpp refuses.
    func testTokenListIsFittedToTheVocabulary() throws {
        let dir = try makeScratchDirectory()
        let model = try LlamaModel.load(ggufFile: GGUFModelTests.modelPath("llama_gqa_untied"))
        XCTAssertEqual(model.config.vocabSize, 64)
        func tokenizer(_ n: Int) -> GGUFMetadata {
            var m = GGUFMetadata()
            m["tokenizer.ggml.model"] = .string("llama")
            m["tokenizer.ggml.tokens"] = .array(.string, (0..<n).map { .string("t\($0)") })
            m["tokenizer.ggml.scores"] = .array(.float32, (0..<n).map { .float32(-Float($0)) })
            m["tokenizer.ggml.token_type"] = .array(.int32, (0..<n).map { _ in .int32(1) })
            return m
        }
        expectDPOError(["70 tokens", "vocab_size 64"]) { try model.saveGGUF(path: dir + "/big.gguf", type: .f32, metadata: tokenizer(70)) }
        XCTAssertFalse(fileExists(dir + "/big.gguf"))
        try model.saveGGUF(path: dir + "/small.gguf", type: .f32, metadata: tokenizer(60))
        let m = try GGUFFile.open(path: dir + "/small.gguf").metadata
        XCTAssertEqual(m["tokenizer.ggml.tokens"]?.strings?.count, 64)
        XCTAssertEqual(m["tokenizer.ggml.tokens"]?.strings?.suffix(2), ["[PAD62]", "[PAD63]"])
        XCTAssertEqual(m["tokenizer.ggml.token_type"], .array(.int32, Array(repeating: .int32(1), count: 60) + Array(repeating: .int32(5), count: 4)))
        XCTAssertEqual(m["tokenizer.ggml.scores"]?.array?.last, .float32(-1000))
        var inconsistent = tokenizer(60)
        inconsistent["tokenizer.ggml.scores"] = .array(.float32, [.float32(0)])
        expectDPOError(["tokenizer.ggml.scores", "does not match the 60 tokens"]) {
            try model.saveGGUF(path: dir + "/bad.gguf", type: .f32, metadata: inconsistent)
        }
    }

    func testSmolLM2RoundTripKeepsTokenizerMetadata() throws {
        let path = try GGUFReaderTests.smolLM2()
        let model = try LlamaModel.load(ggufFile: path)
        let dir = try makeScratchDirectory()
        try model.saveGGUF(path: dir + "/s.gguf", type: .q8_0)
        let source = try GGUFFile.open(path: path), saved = try GGUFFile.open(path: dir + "/s.gguf")
        for key in source.metadata.keys where !key.hasPrefix("llama.") && key != "general.file_type" {
            XCTAssertEqual(saved.metadata[key], source.metadata[key], key)
        }
        for key in source.metadata.keys where key.hasPrefix("llama.") {
            XCTAssertEqual(saved.metadata[key]?.double, source.metadata[key]?.double, key)
        }
        let back = try LlamaModel.load(ggufFile: dir + "/s.gguf")
        XCTAssertEqual(back.config.normalized, model.config.normalized)
        let items: [(prompt: [Int32], completion: [Int32])] = [([1, 9690, 28, 314], [253, 1345, 30])]
        let (x, y) = (try model.sequenceLogProbs(items)[0], try back.sequenceLogProbs(items)[0])
        XCTAssertEqual(x, y, accuracy: 0.05 * abs(x) + 0.05)
    }

    /// With DPO_GGUF_CHECK_DIR set, writes the four saves of one model and the engine's per-token
    /// log-probs there for tools/check_gguf_save.py (gguf-py and transformers read them).
    func testWriteFilesForThePythonCheck() throws {
        guard let dir = ProcessInfo.processInfo.environment["DPO_GGUF_CHECK_DIR"] else {
            throw XCTSkip("set DPO_GGUF_CHECK_DIR to write the files tools/check_gguf_save.py checks")
        }
        try makeDirectories(dir)
        var c = GGUFWriterTests.config
        c.vocabSize = 64
        let model = try TestModels.model(c, seed: 9)
        var sequences: [[Int32]] = []
        var rng = Xoshiro256(seed: 4)
        for n in [7, 12, 20] { sequences.append((0..<n).map { _ in Int32(rng.next() % 64) }) }
        var record: [String: JSONValue] = ["sequences": .array(sequences.map { .array($0.map { .number(Double($0)) }) })]
        for type in GGUFSaveType.allCases {
            try model.saveGGUF(path: "\(dir)/\(type.rawValue).gguf", type: type, name: "check")
            let back = try LlamaModel.load(ggufFile: "\(dir)/\(type.rawValue).gguf")
            var logps: [JSONValue] = []
            for ids in sequences {
                let out = try back.forward(PackedTokens(sequences: [ids]),
                                           head: HeadQuery(rows: (0..<ids.count - 1).map(Int32.init), labels: Array(ids.dropFirst())),
                                           keepActivations: false)
                logps.append(.array(out.logps.map { .number(Double($0)) }))
            }
            record["logps_\(type.rawValue)"] = .array(logps)
        }
        var object = JSONObject()
        for k in record.keys.sorted() { object[k] = record[k] }
        try writeFileAtomically("\(dir)/swift.json", bytes: Array(JSON.serialize(.object(object)).utf8))
    }
}
