import XCTest
@testable import DPO

/// GGUF metadata out and back, refusals by name, errors, and the BPE merge loops.
final class TokenizerBehaviourTests: XCTestCase {
    static let fixtures = TokenizerGoldenTests.fixtures

    /// A tokenizer read from GGUF writes back exactly the tokenizer keys it was read from.
    func testGGUFMetadataReproducesTheSource() throws {
        let file = try GGUFFile.open(path: Self.fixtures + "/spm.gguf")
        let t = try Tokenizer(ggufMetadata: file.metadata)
        var expected = GGUFMetadata()
        for (k, v) in file.metadata.entries where k.hasPrefix("tokenizer.") { expected[k] = v }
        XCTAssertEqual(t.ggufMetadata(), expected)
        XCTAssertEqual(expected["tokenizer.ggml.model"], .string("llama"))
    }

    /// tokenizer.json -> GGUF metadata -> Tokenizer encodes the corpus as the original: Llama 3
    /// (its split regex and ignore_merges carried by tokenizer.ggml.pre "llama-bpe").
    func testByteLevelTokenizerJSONSurvivesGGUFExport() throws {
        let original = try Tokenizer.load(path: Self.fixtures + "/llama3")
        let m = original.ggufMetadata()
        XCTAssertEqual(m["tokenizer.ggml.model"], .string("gpt2"))
        XCTAssertEqual(m["tokenizer.ggml.pre"], .string("llama-bpe"))
        XCTAssertEqual(m["tokenizer.ggml.add_bos_token"], .bool(true))
        XCTAssertEqual(m["tokenizer.ggml.token_type"]?.array?.first, .int32(3))
        let copy = try Tokenizer(ggufMetadata: m)
        XCTAssertEqual(copy.vocabSize, original.vocabSize)
        XCTAssertEqual(copy.bosTokenID, original.bosTokenID)
        for s in TokenizerGoldenTests.corpus {
            XCTAssertEqual(copy.encode(s), original.encode(s), s.debugDescription)
        }
    }

    /// The SentencePiece-style tokenizer.json exports as "llama" with its merges (so a reload
    /// uses the same merges), scores, byte tokens, BOS flag and space prefix.
    func testSentencePieceTokenizerJSONExport() throws {
        let original = try Tokenizer.load(path: Self.fixtures + "/spm")
        let m = original.ggufMetadata()
        XCTAssertEqual(m["tokenizer.ggml.model"], .string("llama"))
        XCTAssertNil(m["tokenizer.ggml.pre"])
        XCTAssertEqual(m["tokenizer.ggml.add_bos_token"], .bool(true))
        XCTAssertEqual(m["tokenizer.ggml.add_space_prefix"], .bool(true))
        XCTAssertEqual(m["tokenizer.ggml.token_type"]?.array?[3], .int32(6), "<0x00> is a byte token")
        XCTAssertEqual(m["tokenizer.ggml.tokens"]?.strings?.count, 702)
        XCTAssertEqual(m["tokenizer.chat_template"]?.string, original.chatTemplate)
        let copy = try Tokenizer(ggufMetadata: m)
        // Loaded from GGUF it is transformers' GGUF Llama tokenizer (Metaspace instead of the
        // legacy normalizer): the same ids on text without added tokens.
        for s in TokenizerGoldenTests.corpus.prefix(400) where !s.contains("<") && !s.contains("hello world") && s.first != " " {
            XCTAssertEqual(copy.encode(s), original.encode(s), s.debugDescription)
        }
    }

    func testSmolLM2GGUFMetadataRoundTrip() throws {
        let path = try TestModels.smolLM2GGUF()
        let file = try GGUFFile.open(path: path)
        let t = try Tokenizer(ggufMetadata: file.metadata)
        let m = t.ggufMetadata()
        XCTAssertEqual(m["tokenizer.ggml.pre"], .string("smollm"))
        XCTAssertEqual(m["tokenizer.ggml.merges"], file.metadata["tokenizer.ggml.merges"])
        // Rebuilt without the source keys (as from tokenizer.json), the keys llama.cpp reads match.
        var spec = try TokenizerSpec(gguf: file.metadata)
        spec.ggufSource = nil
        let rebuilt = try Tokenizer(spec: spec).ggufMetadata()
        for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"] {
            XCTAssertEqual(rebuilt[key], file.metadata[key], key)
        }
    }

    // MARK: - Refusals

    func tokenizerJSON(_ edit: (inout JSONObject) -> Void) throws -> Tokenizer {
        var root = try JSON.parse(try readFile(Self.fixtures + "/llama3/tokenizer.json", limit: 1 << 20)).object!
        edit(&root)
        return try Tokenizer(spec: TokenizerSpec(tokenizerJSON: root))
    }

    func testUnsupportedComponentsAreRefusedByName() throws {
        expectDPOError(["Unigram"]) { _ = try tokenizerJSON { r in var m = r["model"]!.object!; m["type"] = .string("Unigram"); r["model"] = .object(m) } }
        expectDPOError(["WordPiece"]) { _ = try tokenizerJSON { r in var m = r["model"]!.object!; m["type"] = .string("WordPiece"); r["model"] = .object(m) } }
        expectDPOError(["regex", "\\p{L}+x"]) {
            _ = try tokenizerJSON { r in
                r["pre_tokenizer"] = .object(["type": .string("Split"), "pattern": .object(["Regex": .string("\\p{L}+x")]), "behavior": .string("Isolated")])
            }
        }
        expectDPOError(["normalizer", "NFKC"]) { _ = try tokenizerJSON { $0["normalizer"] = .object(["type": .string("NFKC")]) } }
        expectDPOError(["pre-tokenizer", "Whitespace"]) { _ = try tokenizerJSON { $0["pre_tokenizer"] = .object(["type": .string("Whitespace")]) } }
        expectDPOError(["decoder", "WordPiece"]) { _ = try tokenizerJSON { $0["decoder"] = .object(["type": .string("WordPiece")]) } }
        expectDPOError(["merge 0", "not in the vocabulary"]) {
            _ = try tokenizerJSON { r in var m = r["model"]!.object!; m["merges"] = .array([.string("zzzq qqqz")]); r["model"] = .object(m) }
        }

        var g = GGUFMetadata()
        g["tokenizer.ggml.model"] = .string("bert")
        expectDPOError(["tokenizer.ggml.model", "bert"]) { _ = try Tokenizer(ggufMetadata: g) }
        g["tokenizer.ggml.model"] = .string("gpt2")
        g["tokenizer.ggml.tokens"] = .array(.string, [.string("a"), .string("b"), .string("ab")])
        g["tokenizer.ggml.merges"] = .array(.string, [.string("a b")])
        g["tokenizer.ggml.pre"] = .string("deepseek-coder")
        expectDPOError(["tokenizer.ggml.pre", "deepseek-coder"]) { _ = try Tokenizer(ggufMetadata: g) }
        g["tokenizer.ggml.pre"] = .string("gpt2")
        g["tokenizer.ggml.bos_token_id"] = .uint32(7)
        expectDPOError(["bos_token_id"]) { _ = try Tokenizer(ggufMetadata: g) }
        g["tokenizer.ggml.bos_token_id"] = nil
        g["tokenizer.ggml.token_type"] = .array(.int32, [.int32(1)])
        expectDPOError(["token_type", "3 entries"]) { _ = try Tokenizer(ggufMetadata: g) }
        g["tokenizer.ggml.token_type"] = nil
        XCTAssertEqual(try Tokenizer(ggufMetadata: g).encode("abba"), [2, 1, 0])
        expectDPOError(["no tokenizer.ggml.model"]) { _ = try Tokenizer(ggufMetadata: GGUFMetadata()) }
    }

    func testLoadErrors() throws {
        let dir = try makeScratchDirectory()
        expectDPOError(["no tokenizer.json"]) { _ = try Tokenizer.load(path: dir) }
        expectDPOError(["does not exist"]) { _ = try Tokenizer.load(path: dir + "/missing") }
        try writeFileAtomically(dir + "/tokenizer.json", bytes: Array("{\"model\": ".utf8))
        expectDPOError(["tokenizer.json", "invalid JSON"]) { _ = try Tokenizer.load(path: dir) }
        try writeFileAtomically(dir + "/x.bin", bytes: Array("hello".utf8))
        expectDPOError(["neither"]) { _ = try Tokenizer.load(path: dir + "/x.bin") }
    }

    /// hasTokenizer: a GGUF says so by its metadata (one written for a byte-tokenizer model carries
    /// none, so the CLI falls back to the byte tokenizer); an unreadable one is left to `load`.
    func testHasTokenizer() throws {
        let dir = try makeScratchDirectory()
        XCTAssertTrue(Tokenizer.hasTokenizer(path: Self.fixtures + "/spm.gguf"))
        XCTAssertTrue(Tokenizer.hasTokenizer(path: Self.fixtures + "/llama3"))
        XCTAssertFalse(Tokenizer.hasTokenizer(path: dir))
        var config = TestModels.gqaTied
        config.vocabSize = 259
        let model = try LlamaModel.randomlyInitialized(config: config, seed: 1)
        try model.saveGGUF(path: dir + "/bare.gguf", type: .f32)
        XCTAssertFalse(Tokenizer.hasTokenizer(path: dir + "/bare.gguf"))
        XCTAssertFalse(Tokenizer.hasTokenizer(path: dir), "a directory of one GGUF without a tokenizer")
        try writeFileAtomically(dir + "/broken.gguf", bytes: Array("GGUF\u{3}\0\0\0".utf8))
        XCTAssertTrue(Tokenizer.hasTokenizer(path: dir + "/broken.gguf"))
        expectDPOError(["broken.gguf"]) { _ = try Tokenizer.load(path: dir + "/broken.gguf") }
    }

    func testDecodeRejectsIDsOutsideTheVocabulary() throws {
        let t = try Tokenizer.load(path: Self.fixtures + "/qwen2")
        expectDPOError(["token id 99999", "position 1"]) { _ = try t.decode([5, 99999]) }
        expectDPOError(["token id -1", "position 0"]) { _ = try t.decode([-1]) }
        XCTAssertNil(t.token(for: -3))
        XCTAssertNil(t.token(for: Int32.max))
        XCTAssertNil(t.id(for: "no such token at all"))
        XCTAssertEqual(try t.decode([]), "")
    }

    /// A GGUF token list that repeats a string (llama.cpp keeps every id): each id decodes, and
    /// `idCount` covers the list (decode of id 0 used to fail, and the id bound was 3, not 4).
    func testGGUFRepeatedTokensDecodeAtEveryID() throws {
        var g = GGUFMetadata()
        g["tokenizer.ggml.model"] = .string("gpt2")
        g["tokenizer.ggml.pre"] = .string("gpt2")
        g["tokenizer.ggml.tokens"] = .array(.string, ["a", "b", "ab", "a"].map { .string($0) })
        g["tokenizer.ggml.merges"] = .array(.string, [.string("a b")])
        let t = try Tokenizer(ggufMetadata: g)
        XCTAssertEqual(t.vocabSize, 3)  // len(tokenizer) in transformers: distinct strings
        XCTAssertEqual(t.idCount, 4)
        XCTAssertEqual(try t.decode([0, 1, 3, 2]), "abaab")
        XCTAssertEqual(t.encode("ab a"), [2, 3])  // the last id of a repeated string, as transformers
    }

    // MARK: - BPE

    /// The heap merge loop (long words) and the linear one (short words) agree on every word of
    /// the corpus, and with the golden ids (the SentencePiece fixture has no pre-tokenizer, so
    /// its long strings are single long words).
    func testMergeLoopsAgree() throws {
        let t = try Tokenizer.load(path: Self.fixtures + "/qwen2")
        for s in TokenizerGoldenTests.corpus.prefix(1500) {
            var words = Words(Array(s.utf8), startsText: true)
            t.preTokenizer?.apply(&words)
            for r in words.ranges {
                let symbols = Array(words.storage[r]).compactMap { t.id(for: ByteLevel.spell([$0])) }
                XCTAssertEqual(t.model.mergeLinear(symbols), t.model.mergeWithHeap(symbols), s.debugDescription)
            }
        }
        let long = String(repeating: "the quick brown fox ", count: 200)
        let spm = try Tokenizer.load(path: Self.fixtures + "/spm")
        XCTAssertEqual(try spm.decode(spm.encode(long, addSpecialTokens: false)), long)
    }

    /// Concurrent encodes (one holds the word cache, the others go without) give the same ids.
    func testConcurrentEncodes() throws {
        let t = try Tokenizer.load(path: Self.fixtures + "/llama3")
        let corpus = Array(TokenizerGoldenTests.corpus.prefix(800))
        let expected = corpus.map { t.encode($0) }
        let results = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 4)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { k in
            results[k] = corpus.indices.allSatisfy { t.encode(corpus[$0]) == expected[$0] }
        }
        XCTAssertEqual(Array(results), [true, true, true, true])
    }
}
