import Foundation
import XCTest
@testable import DPO

/// `LlamaModel.save(directory:)` / `load(directory:)`: exact round trips, the committed BF16
/// checkpoint, and every kind of broken model directory refused with an error that names the problem.
///
/// With the environment variable `DPO_EXPORT_DIR` set, `testExportForTransformersCheck` also writes
/// random tiny models and their swift-computed per-token log-probs for `tools/check_saved_model.py`.
final class ModelDirectoryTests: XCTestCase {

    // MARK: - Helpers

    /// A fresh empty directory, removed when the test ends.
    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "dpo-model-dir-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    private func listing(_ path: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).sorted()
    }

    /// A random tiny model saved into a fresh directory.
    private func savedModel(_ config: LlamaConfig, seed: UInt64 = 7) throws -> (dir: String, model: LlamaModel) {
        let model = try TestModels.model(config, seed: seed)
        let dir = try temporaryDirectory() + "/model"
        try model.save(directory: dir)
        return (dir, model)
    }

    /// Asserts that `body` throws a `DPOError` (of `kind` when given) whose message contains every
    /// one of `words`.
    private func assertDPOError<T>(_ words: [String], kind: ((DPOError) -> Bool)? = nil,
                                   file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) {
        do {
            _ = try body()
            XCTFail("expected an error containing \(words)", file: file, line: line)
        } catch let error as DPOError {
            for word in words where !error.message.contains(word) {
                XCTFail("error '\(error)' does not contain '\(word)'", file: file, line: line)
            }
            if let kind, !kind(error) { XCTFail("unexpected kind of error: \(error)", file: file, line: line) }
        } catch {
            XCTFail("unexpected non-DPOError \(error)", file: file, line: line)
        }
    }

    private static func isFormat(_ e: DPOError) -> Bool { if case .format = e { return true } else { return false } }
    private static func isIO(_ e: DPOError) -> Bool { if case .io = e { return true } else { return false } }

    private func assertLoadFails(_ dir: String, _ words: [String], kind: ((DPOError) -> Bool)? = nil,
                                 file: StaticString = #filePath, line: UInt = #line) {
        assertDPOError(words, kind: kind, file: file, line: line) { try LlamaModel.load(directory: dir) }
    }

    /// A safetensors file as header object + data section.
    private struct RawSafetensors {
        var header: JSONObject
        var data: [UInt8]

        init(header: JSONObject, data: [UInt8]) { self.header = header; self.data = data }

        init(path: String) throws {
            let bytes = try readFile(path)
            let length = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
            header = try XCTUnwrap(JSON.parse(Array(bytes[8..<(8 + length)])).object)
            data = Array(bytes[(8 + length)...])
        }

        /// The file's bytes: 8-byte little-endian header length, compact JSON header padded with
        /// spaces to a multiple of 8, data. `headerLength` overrides the length field.
        func bytes(headerLength: UInt64? = nil) -> [UInt8] {
            var json = Array(JSON.serialize(.object(header), pretty: false).utf8)
            while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
            var out: [UInt8] = []
            withUnsafeBytes(of: (headerLength ?? UInt64(json.count)).littleEndian) { out += $0 }
            return out + json + data
        }

        func write(_ path: String) throws { try writeFileAtomically(path, bytes: bytes()) }

        /// Appends an F32 tensor at the end of the data section.
        mutating func append(_ name: String, shape: [Int], values: [Float]) {
            let begin = data.count
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data += $0 } }
            header[name] = .object(["dtype": .string("F32"), "shape": .array(shape.map { .number(Double($0)) }),
                                    "data_offsets": .array([.number(Double(begin)), .number(Double(data.count))])])
        }

        /// Edits one tensor's header entry.
        mutating func edit(_ name: String, _ change: (inout JSONObject) -> Void) throws {
            var entry = try XCTUnwrap(header[name]?.object, "no tensor \(name)")
            change(&entry)
            header[name] = .object(entry)
        }
    }

    private func editConfig(_ dir: String, _ change: (inout JSONObject) -> Void) throws {
        var o = try XCTUnwrap(JSON.parse(try readFile(dir + "/config.json")).object)
        change(&o)
        try writeFileAtomically(dir + "/config.json", bytes: Array(JSON.serialize(.object(o)).utf8))
    }

    private func assertBitIdentical(_ a: LlamaModel, _ b: LlamaModel, _ message: String = "",
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.layout.tensors, b.layout.tensors, message, file: file, line: line)
        XCTAssertEqual(a.parameters.array.map(\.bitPattern), b.parameters.array.map(\.bitPattern), message,
                       file: file, line: line)
    }

    /// `config` with head_dim spelled out: the writer always writes the resolved head_dim
    /// (see ConfigTests.testRoundTripKeepsAnUnsetHeadDimUnset).

    private static let configs: [(String, LlamaConfig)] = [
        ("gqaTied", TestModels.gqaTied), ("mhaUntiedBias", TestModels.mhaUntiedBias), ("qwen2", TestModels.qwen2),
    ]

    // MARK: - Round trips

    func testSaveThenLoadIsBitIdentical() throws {
        for (name, config) in Self.configs {
            let root = try temporaryDirectory()
            let dir = root + "/nested/not/yet/there"
            let model = try TestModels.model(config)
            try model.save(directory: dir)
            XCTAssertEqual(try listing(dir), ["config.json", "model.safetensors"], "\(name): no temporary files left")
            let loaded = try LlamaModel.load(directory: dir)
            assertBitIdentical(loaded, model, name)
            XCTAssertEqual(loaded.config, config, name)
            XCTAssertEqual(loaded.config.resolvedHeadDim, config.resolvedHeadDim, name)

            // The file: F32 tensors named as transformers names them; a tied model has no lm_head.
            let file = try SafetensorsFile.open(dir + "/model.safetensors")
            XCTAssertEqual(file.metadata, ["format": "pt"])
            XCTAssertEqual(Set(file.tensorNames), Set(model.layout.tensors.map(\.name)), name)
            XCTAssertEqual(file.tensorNames.contains("lm_head.weight"), !config.tieWordEmbeddings, name)
            for spec in model.layout.tensors {
                XCTAssertEqual(file.info(spec.name)?.dtype, .F32, spec.name)
                XCTAssertEqual(file.info(spec.name)?.shape, spec.shape, spec.name)
            }

            // Same outputs.
            let (packed, head) = TestModels.batch(vocab: config.vocabSize)
            let a = try model.forward(packed, head: head, keepActivations: false)
            let b = try loaded.forward(packed, head: head, keepActivations: false)
            XCTAssertEqual(a.logps, b.logps, name)

            // Saving again over the same directory replaces the files and still leaves nothing else.
            let other = try TestModels.model(config, seed: 99)
            try other.save(directory: dir)
            XCTAssertEqual(try listing(dir), ["config.json", "model.safetensors"], name)
            assertBitIdentical(try LlamaModel.load(directory: dir), other, name)
            XCTAssertEqual(try listing(root), ["nested"])
        }
    }

    func testSaveLoadSaveIsByteIdentical() throws {
        for (name, config) in Self.configs {
            let (dir, _) = try savedModel(config)
            let again = try temporaryDirectory()
            try LlamaModel.load(directory: dir).save(directory: again)
            for file in ["config.json", "model.safetensors"] {
                XCTAssertEqual(try readFile(again + "/" + file), try readFile(dir + "/" + file), "\(name) \(file)")
            }
        }
    }

    func testConfigJSONRoundTripKeepsCheckpointKeys() throws {
        // A transformers-saved checkpoint: its extra keys survive load + save; dtype becomes float32.
        let fixture = TestModels.fixturesDirectory() + "/mha_untied_bias_llama3/model"
        let original = try XCTUnwrap(JSON.parse(try readFile(fixture + "/config.json")).object)
        let model = try LlamaModel.load(directory: fixture)
        let dir = try temporaryDirectory() + "/saved"
        try model.save(directory: dir)
        let saved = try XCTUnwrap(JSON.parse(try readFile(dir + "/config.json")).object)
        for key in original.keys where key != "dtype" {
            XCTAssertEqual(saved[key], original[key], key)
        }
        XCTAssertEqual(saved["dtype"], .string("float32"))
        XCTAssertEqual(try LlamaModel.load(directory: dir).config, model.config)
        assertBitIdentical(try LlamaModel.load(directory: dir), model)
    }

    func testLoadsCommittedBF16Fixture() throws {
        let fixtures = TestModels.fixturesDirectory() + "/gqa_tied"
        let bf16 = try LlamaModel.load(directory: fixtures + "/model_bf16")
        let f32 = try LlamaModel.load(directory: fixtures + "/model")
        XCTAssertEqual(bf16.config, f32.config)
        XCTAssertEqual(bf16.config.hiddenSize, 64)
        XCTAssertTrue(bf16.config.tieWordEmbeddings)
        XCTAssertEqual(bf16.config.padTokenId, 0)
        XCTAssertEqual(bf16.layout.tensors, f32.layout.tensors)
        // Every parameter is the F32 value rounded to nearest-even bfloat16, widened exactly.
        let a = bf16.parameters.array, b = f32.parameters.array
        XCTAssertEqual(a.count, b.count)
        var differing = 0
        for i in 0..<a.count {
            let bits = b[i].bitPattern
            let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
            if a[i].bitPattern != rounded { differing += 1 }
        }
        XCTAssertEqual(differing, 0)
        // Saved again it is an F32 checkpoint with the same values, config dtype float32.
        let dir = try temporaryDirectory() + "/resaved"
        try bf16.save(directory: dir)
        assertBitIdentical(try LlamaModel.load(directory: dir), bf16)
        let config = try XCTUnwrap(JSON.parse(try readFile(dir + "/config.json")).object)
        XCTAssertEqual(config["dtype"], .string("float32"))
        XCTAssertEqual(try SafetensorsFile.open(dir + "/model.safetensors").info("model.norm.weight")?.dtype, .F32)
    }

    // MARK: - Broken safetensors

    func testTruncatedSafetensorsIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        let bytes = try readFile(path)
        // The data section is laid out in name order: "model.norm.weight" is last.
        try writeFileAtomically(path, bytes: Array(bytes.dropLast(4)))
        assertLoadFails(dir, [path, "tensor 'model.norm.weight'", "extends past end of data"], kind: Self.isFormat)
        // Cut inside the header, and shorter than the length field.
        try writeFileAtomically(path, bytes: Array(bytes.prefix(40)))
        assertLoadFails(dir, [path, "header length", "exceeds file size 40"], kind: Self.isFormat)
        try writeFileAtomically(path, bytes: Array(bytes.prefix(5)))
        assertLoadFails(dir, [path, "5 bytes", "too short"], kind: Self.isFormat)
        try writeFileAtomically(path, bytes: [])
        assertLoadFails(dir, [path, "0 bytes"], kind: Self.isFormat)
    }

    func testHeaderLengthBeyondFileSizeIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        let raw = try RawSafetensors(path: path)
        let size = raw.bytes().count
        try writeFileAtomically(path, bytes: raw.bytes(headerLength: UInt64(size)))
        assertLoadFails(dir, [path, "header length \(size) exceeds file size \(size)"], kind: Self.isFormat)
        try writeFileAtomically(path, bytes: raw.bytes(headerLength: UInt64.max))
        assertLoadFails(dir, [path, "exceeds the limit"], kind: Self.isFormat)
    }

    func testOverlappingTensorsAreRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        // Two [16] tensors: point the second at the first one's bytes.
        let a = "model.layers.0.input_layernorm.weight", b = "model.layers.0.post_attention_layernorm.weight"
        let offsets = try XCTUnwrap(raw.header[a]?.object?["data_offsets"])
        try raw.edit(b) { $0["data_offsets"] = offsets }
        try raw.write(path)
        assertLoadFails(dir, [path, "'\(a)'", "'\(b)'", "overlap"], kind: Self.isFormat)

        // Partial overlap: shift a tensor by 4 bytes into its neighbour.
        let (dir2, _) = try savedModel(TestModels.gqaTied)
        let path2 = dir2 + "/model.safetensors"
        var raw2 = try RawSafetensors(path: path2)
        let name = "model.layers.1.mlp.down_proj.weight"
        let range = try XCTUnwrap(raw2.header[name]?.object?["data_offsets"]?.array?.compactMap(\.int))
        try raw2.edit(name) { $0["data_offsets"] = .array([.number(Double(range[0] + 4)), .number(Double(range[1] + 4))]) }
        try raw2.write(path2)
        assertLoadFails(dir2, [path2, name, "overlap"], kind: Self.isFormat)
    }

    func testUnknownDTypeIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        let name = "model.layers.0.mlp.up_proj.weight"
        try raw.edit(name) { $0["dtype"] = .string("F33") }
        try raw.write(path)
        assertLoadFails(dir, [path, "unknown dtype 'F33' for tensor '\(name)'"], kind: Self.isFormat)
    }

    func testNonFloatDTypeIsRefused() throws {
        // A known dtype of the same width that cannot be loaded as Float.
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        let name = "model.layers.1.self_attn.o_proj.weight"
        try raw.edit(name) { $0["dtype"] = .string("I32") }
        try raw.write(path)
        assertLoadFails(dir, [path, "'\(name)'", "I32", "cannot be loaded as Float"], kind: Self.isFormat)
    }

    func testShapeNotMatchingEditedConfigIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        try editConfig(dir) { $0["intermediate_size"] = .number(32) }
        assertLoadFails(dir, ["tensor 'model.layers.0.mlp.gate_proj.weight'", "[24, 16]", "[32, 16]", dir],
                        kind: Self.isFormat)
        try editConfig(dir) { $0["intermediate_size"] = .number(24); $0["hidden_size"] = .number(24) }
        assertLoadFails(dir, ["tensor 'model.embed_tokens.weight'", "[24, 16]", "the config implies [24, 24]"],
                        kind: Self.isFormat)
        try editConfig(dir) { $0["hidden_size"] = .number(16); $0["vocab_size"] = .number(30) }
        assertLoadFails(dir, ["tensor 'model.embed_tokens.weight'", "[24, 16]", "[30, 16]"], kind: Self.isFormat)
    }

    func testShapeNotMatchingConfigInCraftedFileIsRefused() throws {
        // Same element count, transposed shape: the header is valid, the model is not.
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        let name = "model.layers.1.self_attn.k_proj.weight"
        XCTAssertEqual(raw.header[name]?.object?["shape"], .array([.number(8), .number(16)]))
        try raw.edit(name) { $0["shape"] = .array([.number(16), .number(8)]) }
        try raw.write(path)
        assertLoadFails(dir, ["tensor '\(name)'", "has shape [16, 8]", "the config implies [8, 16]"], kind: Self.isFormat)
        // A flattened norm weight.
        var raw2 = try RawSafetensors(path: path)
        try raw2.edit(name) { $0["shape"] = .array([.number(8), .number(16)]) }
        try raw2.edit("model.norm.weight") { $0["shape"] = .array([.number(4), .number(4)]) }
        try raw2.write(path)
        assertLoadFails(dir, ["tensor 'model.norm.weight'", "[4, 4]", "[16]"], kind: Self.isFormat)
    }

    func testMissingTensorIsRefused() throws {
        // Untied config, no lm_head.weight in the file.
        let (dir, _) = try savedModel(TestModels.mhaUntiedBias)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        raw.header["lm_head.weight"] = nil
        try raw.write(path)
        assertLoadFails(dir, ["tensor 'lm_head.weight' is missing", dir], kind: Self.isFormat)

        // A tied checkpoint whose config is edited to untied.
        let (tiedDir, _) = try savedModel(TestModels.gqaTied)
        try editConfig(tiedDir) { $0["tie_word_embeddings"] = .bool(false) }
        assertLoadFails(tiedDir, ["tensor 'lm_head.weight' is missing"], kind: Self.isFormat)

        // A bias the config implies.
        let (dir3, _) = try savedModel(TestModels.mhaUntiedBias)
        var raw3 = try RawSafetensors(path: dir3 + "/model.safetensors")
        raw3.header["model.layers.1.mlp.down_proj.bias"] = nil
        try raw3.write(dir3 + "/model.safetensors")
        assertLoadFails(dir3, ["tensor 'model.layers.1.mlp.down_proj.bias' is missing"], kind: Self.isFormat)

        // A layer the config implies (num_hidden_layers raised).
        let (dir4, _) = try savedModel(TestModels.gqaTied)
        try editConfig(dir4) { $0["num_hidden_layers"] = .number(3) }
        assertLoadFails(dir4, ["tensor 'model.layers.2.input_layernorm.weight' is missing"], kind: Self.isFormat)
    }

    func testUnexpectedExtraTensorIsRefused() throws {
        for (name, shape) in [("model.layers.0.self_attn.o_proj.bias", [16]),      // bias the config does not have
                              ("model.layers.2.input_layernorm.weight", [16]),     // a third layer of a 2-layer model
                              ("score.weight", [2, 16])] {                          // another head
            let (dir, _) = try savedModel(TestModels.gqaTied)
            let path = dir + "/model.safetensors"
            var raw = try RawSafetensors(path: path)
            raw.append(name, shape: shape, values: [Float](repeating: 0.5, count: shape.reduce(1, *)))
            try raw.write(path)
            assertLoadFails(dir, ["tensor '\(name)'", "not part of the model", dir], kind: Self.isFormat)
        }
        // The reverse: a config (qwen2) implying q/k/v biases the bias-free checkpoint does not have.
        let (dir, _) = try savedModel(TestModels.gqaTied)
        try editConfig(dir) { $0["model_type"] = .string("qwen2"); $0["attention_bias"] = nil }
        assertLoadFails(dir, ["tensor 'model.layers.0.self_attn.q_proj.bias' is missing"], kind: Self.isFormat)
    }

    func testToleratedExtraTensorsAreIgnored() throws {
        // Old checkpoints carry rotary inv_freq buffers; tied checkpoints may carry lm_head.weight.
        let (dir, model) = try savedModel(TestModels.gqaTied)
        let path = dir + "/model.safetensors"
        var raw = try RawSafetensors(path: path)
        raw.append("model.layers.0.self_attn.rotary_emb.inv_freq", shape: [2], values: [1, 0.01])
        raw.append("lm_head.weight", shape: [24, 16], values: [Float](repeating: 9, count: 24 * 16))
        try raw.write(path)
        assertBitIdentical(try LlamaModel.load(directory: dir), model)
    }

    func testMissingWeightsFileIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        try FileManager.default.removeItem(atPath: dir + "/model.safetensors")
        assertLoadFails(dir, ["no model.safetensors or model.safetensors.index.json", dir], kind: Self.isIO)
    }

    // MARK: - Broken config.json and directories

    func testConfigThatIsNotJSONIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        let configPath = dir + "/config.json"
        for text in ["{\"hidden_size\": 16,", "not json", "", "{\"a\": 1} trailing"] {
            try writeFileAtomically(configPath, bytes: Array(text.utf8))
            assertLoadFails(dir, [configPath, "invalid JSON", "at byte"], kind: Self.isFormat)
        }
        try writeFileAtomically(configPath, bytes: Array("[1, 2]".utf8))
        assertLoadFails(dir, [configPath, "not a JSON object"], kind: Self.isFormat)
        try writeFileAtomically(configPath, bytes: [0xFF, 0xFE, 0x7B, 0x7D])
        assertLoadFails(dir, [configPath, "at byte 0"], kind: Self.isFormat)
    }

    func testMissingConfigIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        try FileManager.default.removeItem(atPath: dir + "/config.json")
        assertLoadFails(dir, ["no config.json in '\(dir)'"], kind: Self.isIO)
    }

    func testMissingDirectoryIsRefused() throws {
        let root = try temporaryDirectory()
        assertLoadFails(root + "/nope", ["'\(root)/nope'", "does not exist"], kind: Self.isIO)
        // A file, not a directory.
        try writeFileAtomically(root + "/file", bytes: [1])
        assertLoadFails(root + "/file", ["'\(root)/file'", "not a directory"], kind: Self.isIO)
        assertLoadFails("", ["does not exist"], kind: Self.isIO)
    }

    func testUnsupportedRopeTypeInConfigIsRefused() throws {
        let (dir, _) = try savedModel(TestModels.mhaUntiedBias)
        for type in ["yarn", "linear", "dynamic"] {
            try editConfig(dir) {
                $0["rope_parameters"] = .object(["rope_type": .string(type), "rope_theta": .number(10_000),
                                                 "factor": .number(4), "original_max_position_embeddings": .number(64)])
            }
            assertLoadFails(dir, [dir + "/config.json", "rope type '\(type)' is not supported"], kind: Self.isFormat)
        }
        // The transformers-4 spelling too.
        try editConfig(dir) {
            $0["rope_parameters"] = nil
            $0["rope_theta"] = .number(10_000)
            $0["rope_scaling"] = .object(["type": .string("dynamic"), "factor": .number(2)])
        }
        assertLoadFails(dir, [dir + "/config.json", "'dynamic'"], kind: Self.isFormat)
    }

    func testInvalidConfigValuesNameTheFile() throws {
        let (dir, _) = try savedModel(TestModels.gqaTied)
        try editConfig(dir) { $0["hidden_act"] = .string("gelu") }
        assertLoadFails(dir, [dir + "/config.json", "hidden_act", "'gelu'"], kind: Self.isFormat)
        try editConfig(dir) { $0["hidden_act"] = .string("silu"); $0["num_key_value_heads"] = .number(3) }
        assertLoadFails(dir, [dir + "/config.json", "num_key_value_heads 3"], kind: Self.isFormat)
        try editConfig(dir) { $0["num_key_value_heads"] = .number(2); $0["hidden_size"] = .string("16") }
        assertLoadFails(dir, [dir + "/config.json", "'hidden_size'"], kind: Self.isFormat)
    }

    func testSaveIntoImpossiblePathFails() throws {
        let root = try temporaryDirectory()
        try writeFileAtomically(root + "/file", bytes: [1])
        let model = try TestModels.model(TestModels.qwen2)
        assertDPOError(["cannot create directory", root + "/file"], kind: Self.isIO) {
            try model.save(directory: root + "/file/model")
        }
        XCTAssertEqual(try listing(root), ["file"])
    }

    // MARK: - Export for tools/check_saved_model.py

    /// Writes `$DPO_EXPORT_DIR/<name>/` (config.json, model.safetensors, logps.json) for random tiny
    /// models: tied GQA, untied MHA with biases and llama3 RoPE, and Qwen2. logps.json holds
    /// `{"sequences": [[ids]], "logps": [[log p(ids[t] | ids[..<t]) for t >= 1]]}` computed by
    /// swift-dpo from the saved directory. `tools/check_saved_model.py $DPO_EXPORT_DIR` then loads each
    /// model with transformers and compares.
    func testExportForTransformersCheck() throws {
        guard let root = ProcessInfo.processInfo.environment["DPO_EXPORT_DIR"], !root.isEmpty else {
            throw XCTSkip("set DPO_EXPORT_DIR to export models for tools/check_saved_model.py")
        }
        let exports: [(String, LlamaConfig)] = [
            ("gqa_tied", TestModels.gqaTied), ("mha_untied_bias_llama3", TestModels.mhaUntiedBias),
            ("qwen2", TestModels.qwen2),
        ]
        for (name, config) in exports {
            let dir = root + "/" + name
            try? FileManager.default.removeItem(atPath: dir)
            let model = try TestModels.model(config, seed: 2024)
            try model.save(directory: dir)

            // Lengths 1 (no prediction) to 40 (positions well past llama3's original context of 8).
            var rng = Xoshiro256(seed: 77)
            let sequences = [1, 2, 5, 17, 40].map { n in
                (0..<n).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
            }
            let loaded = try LlamaModel.load(directory: dir)
            let packed = PackedTokens(sequences: sequences)
            var rows: [Int32] = [], labels: [Int32] = []
            for seg in packed.segments where seg.count > 1 {
                for t in 1..<seg.count {
                    rows.append(Int32(seg.start + t - 1))
                    labels.append(packed.tokens[seg.start + t])
                }
            }
            let out = try loaded.forward(packed, head: HeadQuery(rows: rows, labels: labels), keepActivations: false)
            XCTAssertEqual(out.logps, try model.forward(packed, head: HeadQuery(rows: rows, labels: labels),
                                                        keepActivations: false).logps)
            var logps: [JSONValue] = []
            var next = 0
            for s in sequences {
                let n = max(0, s.count - 1)
                logps.append(.array(out.logps[next..<(next + n)].map { .number(Double($0)) }))
                next += n
            }
            let document: JSONValue = .object([
                "model": .string(name),
                "sequences": .array(sequences.map { .array($0.map { .number(Double($0)) }) }),
                "logps": .array(logps),
            ])
            try writeFileAtomically(dir + "/logps.json", bytes: Array((JSON.serialize(document) + "\n").utf8))
            XCTAssertEqual(try listing(dir), ["config.json", "logps.json", "model.safetensors"])
        }
    }
}
