import XCTest
@testable import DPO

/// Tokenizers written as Hugging Face files (TokenizerExport.swift) and read back: the same ids,
/// decodes and chat template as the source on the whole corpus; a model saved from the SmolLM2
/// GGUF carries its tokenizer; transformers reads the written files as the source
/// (Fixtures/tokenizer/export-parity.json, tools/make_tokenizer_export_fixtures.py).
///
/// With DPO_TOKENIZER_EXPORT_DIR set, the written directories are kept there by name (the
/// oracle script reads them); otherwise they go to scratch directories.
final class TokenizerExportTests: XCTestCase {
    static let fixtures = TokenizerGoldenTests.fixtures

    /// A directory to write `name`'s files into.
    func exportDirectory(_ name: String) throws -> String {
        guard let root = ProcessInfo.processInfo.environment["DPO_TOKENIZER_EXPORT_DIR"] else {
            return try makeScratchDirectory()
        }
        let path = root + "/" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// GGUF "gpt2" metadata with the vocabulary and merges of the Qwen2 fixture and `pre` as
    /// `tokenizer.ggml.pre`.
    static func byteLevelGGUF(pre: String) throws -> GGUFMetadata {
        var m = try Tokenizer.load(path: fixtures + "/qwen2").ggufMetadata()
        m["tokenizer.ggml.pre"] = .string(pre)
        return m
    }

    /// Every kind of source the engine loads, by the name its written directory gets.
    static func sources() throws -> [(String, Tokenizer)] {
        var list: [(String, Tokenizer)] = []
        for name in ["llama3", "qwen2", "spm"] { list.append((name, try Tokenizer.load(path: fixtures + "/" + name))) }
        for name in ["spm", "llama3", "qwen2"] { list.append(("\(name)-gguf", try Tokenizer.load(path: fixtures + "/\(name).gguf"))) }
        for pre in ["gpt2", "smollm", "llama-bpe", "qwen2"] {
            list.append(("gguf-\(pre)", try Tokenizer(ggufMetadata: try byteLevelGGUF(pre: pre))))
        }
        return list
    }

    static let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there 2024!"),
                           ChatMessage(role: "assistant", content: "Hello <|im_end|> back.")]

    /// `copy` encodes (with and without special tokens) and decodes (with and without special
    /// tokens) every corpus string as `original`, renders the chat template alike and has the
    /// same special tokens.
    func assertSameTokenizer(_ copy: Tokenizer, _ original: Tokenizer, _ name: String, corpus: [String] = TokenizerGoldenTests.corpus,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(copy.bosTokenID, original.bosTokenID, name, file: file, line: line)
        XCTAssertEqual(copy.eosTokenID, original.eosTokenID, name, file: file, line: line)
        XCTAssertEqual(copy.padTokenID, original.padTokenID, name, file: file, line: line)
        XCTAssertEqual(copy.unkTokenID, original.unkTokenID, name, file: file, line: line)
        XCTAssertEqual(copy.chatTemplate, original.chatTemplate, name, file: file, line: line)
        var failures = 0
        for s in corpus {
            let ids = original.encode(s, addSpecialTokens: false)
            let same = try copy.encode(s, addSpecialTokens: false) == ids && copy.encode(s) == original.encode(s)
                && copy.decode(ids) == original.decode(ids)
                && copy.decode(ids, skipSpecialTokens: true) == original.decode(ids, skipSpecialTokens: true)
            if !same {
                failures += 1
                if failures <= 5 { XCTFail("\(name): \(s.debugDescription) differs", file: file, line: line) }
            }
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) of \(corpus.count) strings differ", file: file, line: line)
        if original.chatTemplate != nil {
            for generation in [false, true] {
                XCTAssertEqual(try copy.chatTemplateIDs(Self.messages, addGenerationPrompt: generation),
                               try original.chatTemplateIDs(Self.messages, addGenerationPrompt: generation), name, file: file, line: line)
            }
        }
    }

    // MARK: - Round trips

    func testEverySourceRoundTrips() throws {
        for (name, original) in try Self.sources() {
            let dir = try exportDirectory(name)
            try original.writeHuggingFaceFiles(into: dir)
            for file in Tokenizer.huggingFaceFileNames { XCTAssertTrue(fileExists(dir + "/" + file), "\(name): \(file)") }
            try assertSameTokenizer(try Tokenizer.load(path: dir), original, name)
        }
    }

    /// What the files say, for a GGUF "llama" and a GGUF "gpt2" source (transformers' GGUF
    /// conversion writes the same components, see the parity test).
    func testWrittenComponents() throws {
        let spm = try Tokenizer.load(path: Self.fixtures + "/spm.gguf")
        let json = spm.tokenizerJSON().object!
        let model = json["model"]!.object!
        XCTAssertEqual(model["byte_fallback"], .bool(true))
        XCTAssertEqual(model["fuse_unk"], .bool(true))
        XCTAssertEqual(model["vocab"]?.object?.count, 702)
        XCTAssertEqual(model["merges"]?.array?.count, spm.spec.merges.count)
        XCTAssertEqual(json["pre_tokenizer"]?.object?["prepend_scheme"], .string("first"))
        XCTAssertEqual(json["added_tokens"]?.array?.first?.object?["special"], .bool(true))
        let config = spm.tokenizerConfigJSON().object!
        XCTAssertEqual(config["add_bos_token"], .bool(true))
        XCTAssertEqual(config["add_eos_token"], .bool(false))
        XCTAssertEqual(config["bos_token"], .string("<s>"))
        XCTAssertEqual(config["unk_token"], .string("<unk>"))
        XCTAssertNil(config["pad_token"])
        XCTAssertEqual(config["added_tokens_decoder"]?.object?["1"]?.object?["content"], .string("<s>"))
        XCTAssertEqual(config["chat_template"]?.string, spm.chatTemplate)

        let llama = try Tokenizer(ggufMetadata: try Self.byteLevelGGUF(pre: "llama-bpe")).tokenizerJSON().object!
        XCTAssertEqual(llama["model"]?.object?["ignore_merges"], .bool(true))
        let pre = llama["pre_tokenizer"]?.object?["pretokenizers"]?.array
        XCTAssertEqual(pre?.first?.object?["pattern"]?.object?["Regex"], .string(SplitPattern.llama3.rawValue))
        XCTAssertEqual(pre?.last?.object?["use_regex"], .bool(false))
    }

    /// A post-processor that the add_bos_token / add_eos_token flags cannot describe (EOS before
    /// the text) is left to tokenizer.json's TemplateProcessing, and reads back as it was.
    func testPostProcessorWithoutFlags() throws {
        var spec = try TokenizerSpec(directory: Self.fixtures + "/spm")
        spec.postProcessor = .template(prefix: [2, 1], suffix: [2])
        let original = try Tokenizer(spec: spec)
        XCTAssertNil(original.tokenizerConfigJSON().object?["add_bos_token"])
        let dir = try exportDirectory("spm-template")
        try original.writeHuggingFaceFiles(into: dir)
        let copy = try Tokenizer.load(path: dir)
        XCTAssertEqual(copy.encode("a b"), original.encode("a b"))
        XCTAssertEqual(copy.encode("a b").prefix(2), [2, 1])
        XCTAssertEqual(copy.encode("a b").last, 2)
    }

    /// A GGUF byte-level token outside the byte alphabet ("x y", user-defined) is written once,
    /// respelled, as transformers does; it still matches whole as an added token.
    func testGGUFTokenOutsideTheByteAlphabet() throws {
        var g = GGUFMetadata()
        g["tokenizer.ggml.model"] = .string("gpt2")
        g["tokenizer.ggml.pre"] = .string("gpt2")
        g["tokenizer.ggml.tokens"] = .array(.string, ["a", "b", "ab", "<ctl>", "x y", "x", "y", "Ġ"].map { .string($0) })
        g["tokenizer.ggml.token_type"] = .array(.int32, [1, 1, 1, 3, 4, 1, 1, 1].map { .int32($0) })
        g["tokenizer.ggml.merges"] = .array(.string, [.string("a b")])
        let original = try Tokenizer(ggufMetadata: g)
        let vocab = original.tokenizerJSON().object!["model"]!.object!["vocab"]!.object!
        XCTAssertEqual(vocab["xĠy"], .number(4))
        XCTAssertNil(vocab["x y"])
        let dir = try exportDirectory("gguf-respelled")
        try original.writeHuggingFaceFiles(into: dir)
        let copy = try Tokenizer.load(path: dir)
        let text = "ab x y<ctl> ba"
        XCTAssertEqual(copy.encode(text), original.encode(text))
        XCTAssertEqual(copy.encode(text).contains(4), true)
        XCTAssertEqual(try copy.decode(copy.encode(text)), text)
    }

    // MARK: - transformers

    /// transformers reads the written files as their source (tools/make_tokenizer_export_fixtures.py
    /// checks that on the whole corpus, and records what transformers gives from the written files
    /// for 40 strings): the engine's tokenizer reloaded from the same files gives those ids,
    /// decodes and chat-template ids.
    func testTransformersReadsTheWrittenFilesAsTheEngine() throws {
        let o = try JSON.parse(try readFile(Self.fixtures + "/export-parity.json", limit: 1 << 20)).object!
        let strings = o["strings"]!.array!.map { $0.string! }
        var sources = Dictionary(uniqueKeysWithValues: try Self.sources())
        sources["smollm2"] = try Tokenizer.load(path: try TestModels.smolLM2GGUF())
        let expected = o["tokenizers"]!.object!
        XCTAssertEqual(expected.keys, ["llama3", "qwen2", "spm", "spm-gguf", "llama3-gguf", "qwen2-gguf", "smollm2"])
        func ids(_ v: JSONValue?) -> [[Int32]] { v?.array?.map { $0.array!.map { Int32($0.int!) } } ?? [] }
        for (name, e) in expected.entries {
            let dir = try exportDirectory(name + "-parity")
            try XCTUnwrap(sources[name], name).writeHuggingFaceFiles(into: dir)
            let t = try Tokenizer.load(path: dir)
            let e = e.object!
            XCTAssertEqual(strings.map { t.encode($0, addSpecialTokens: false) }, ids(e["ids"]), name)
            XCTAssertEqual(strings.map { t.encode($0) }, ids(e["with_special"]), name)
            XCTAssertEqual(try ids(e["ids"]).map { try t.decode($0) }, e["decoded"]!.array!.map { $0.string! }, name)
            if t.chatTemplate != nil {
                XCTAssertEqual(try [false, true].map { try t.chatTemplateIDs(Self.messages, addGenerationPrompt: $0) }, ids(e["chat_ids"]), name)
            } else {
                XCTAssertEqual(e["chat_ids"], .null, name)
            }
        }
    }

    // MARK: - SmolLM2

    /// The SmolLM2 GGUF loaded as a model and saved as a Hugging Face directory: the directory
    /// has the tokenizer files, and its tokenizer is the GGUF's on the corpus. Saved again into
    /// the same directory, the files are replaced (no staging folder is left).
    func testSavedSmolLM2DirectoryCarriesTheTokenizer() throws {
        let path = try TestModels.smolLM2GGUF()
        let model = try LlamaModel.load(ggufFile: path)
        let dir = try exportDirectory("smollm2-model")
        try model.save(directory: dir)
        for file in ["config.json", "model.safetensors"] + Tokenizer.huggingFaceFileNames {
            XCTAssertTrue(fileExists(dir + "/" + file), file)
        }
        let original = try Tokenizer.load(path: path)
        let saved = try Tokenizer.load(path: dir)
        XCTAssertEqual(saved.vocabSize, 49152)
        try assertSameTokenizer(saved, original, "smollm2")

        try writeFileAtomically(dir + "/tokenizer.json", bytes: Array("{}".utf8))
        try model.save(directory: dir)
        XCTAssertEqual(try Tokenizer.load(path: dir).encode("Hello, 2024!"), original.encode("Hello, 2024!"))
        XCTAssertEqual(listDirectory(dir).filter { $0.hasPrefix(".") }, [])
    }

    /// A model without GGUF tokenizer metadata writes no tokenizer files, as before.
    func testModelWithoutTokenizerWritesNone() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let dir = try makeScratchDirectory() + "/model"
        try model.save(directory: dir)
        XCTAssertEqual(listDirectory(dir).sorted(), ["config.json", "model.safetensors"])
    }

    /// A model whose GGUF metadata carries a tokenizer the engine cannot read (an unknown
    /// pre-tokenizer) still saves, without tokenizer files.
    func testUnreadableGGUFTokenizerIsLeftOut() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        var g = try Self.byteLevelGGUF(pre: "qwen2")
        g["tokenizer.ggml.pre"] = .string("no-such-pre")
        model.ggufMetadata = g
        let dir = try makeScratchDirectory() + "/model"
        try model.save(directory: dir)
        XCTAssertEqual(listDirectory(dir).sorted(), ["config.json", "model.safetensors"])
        g["tokenizer.ggml.pre"] = .string("qwen2")
        model.ggufMetadata = g
        try model.save(directory: dir)
        XCTAssertEqual(listDirectory(dir).sorted(), ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json"])
    }
}
