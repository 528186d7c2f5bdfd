/// Writing a tokenizer as Hugging Face files, so that a model directory saved from a GGUF file
/// carries its tokenizer for transformers (`AutoTokenizer.from_pretrained(dir)`) and for
/// `Tokenizer.load(path:)`: the inverse of TokenizerJSON.swift.
///
/// The files describe the pipeline the engine runs, component by component, so every tokenizer
/// the engine loads (tokenizer.json, GGUF "gpt2" with each supported `tokenizer.ggml.pre`, GGUF
/// "llama") writes out. For a GGUF tokenizer that is what transformers' GGUF conversion
/// (integrations/gguf/gguf_tokenizer_mapping.py) builds: the vocabulary with tokens outside the
/// byte alphabet respelled, the merges (for "llama" recovered from the scores), control tokens as
/// special added tokens, user-defined ones as plain added tokens, and BOS/EOS added per the flags.
/// One difference on purpose: "smollm" keeps SmolLM2's own pre-tokenizer (digits one by one),
/// which transformers' conversion lacks (see tools/make_tokenizer_fixtures.py).
extension Tokenizer {
    /// The files `writeHuggingFaceFiles` writes, in order.
    public static let huggingFaceFileNames = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

    /// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into the existing
    /// directory `directory` (each file atomically; other files are left as they are).
    public func writeHuggingFaceFiles(into directory: String) throws {
        for (name, value) in zip(Tokenizer.huggingFaceFileNames, huggingFaceFiles()) {
            try writeFileAtomically(joinPath(directory, name), bytes: Array((JSON.serialize(value) + "\n").utf8))
        }
    }

    /// transformers' `tokenizer.save_pretrained(directory)`: the directory (and its parents) made
    /// if missing, then `writeHuggingFaceFiles`.
    public func savePretrained(directory: String) throws {
        if !isDirectory(directory) {
            if entryExists(directory) { throw DPOError.io("cannot save a tokenizer to '\(directory)': it exists and is not a directory") }
            try makeDirectories(directory)
        }
        try writeHuggingFaceFiles(into: directory)
    }

    /// The contents of the files of `huggingFaceFileNames`.
    func huggingFaceFiles() -> [JSONValue] {
        [tokenizerJSON(), tokenizerConfigJSON(), specialTokensMapJSON()]
    }

    // MARK: - tokenizer.json

    func tokenizerJSON() -> JSONValue {
        var root = JSONObject()
        root["version"] = .string("1.0")
        root["truncation"] = .null
        root["padding"] = .null
        root["added_tokens"] = .array(addedTokens.sorted { $0.id < $1.id }.map { addedTokenJSON($0, withID: true) })
        root["normalizer"] = normalizer?.json ?? .null
        root["pre_tokenizer"] = preTokenizer?.json ?? .null
        root["post_processor"] = templateProcessingJSON(prefix: prefixIDs, suffix: suffixIDs) { token(for: $0) ?? "" }
        root["decoder"] = decoder?.json ?? .null
        root["model"] = .object(modelJSON())
        return .object(root)
    }

    /// The BPE model: its vocabulary by id, merges as [left, right] pairs in rank order, options.
    private func modelJSON() -> JSONObject {
        let options = spec.options
        var entries = spec.vocab.map { (token: $0.key, id: $0.value) }
        // A GGUF byte-level vocabulary holds each token outside the byte alphabet twice, as the
        // file spells it and respelled (TokenizerGGUF.swift); transformers keeps the respelling.
        if options.byteLevel && spec.ggufSource != nil {
            entries.removeAll { ByteLevel.bytes(of: $0.token) == nil }
        }
        entries.sort { $0.id != $1.id ? $0.id < $1.id : Array($0.token.utf8).lexicographicallyPrecedes(Array($1.token.utf8)) }
        var vocab = JSONObject()
        for e in entries { vocab[e.token] = .number(Double(e.id)) }
        var model = JSONObject()
        model["type"] = .string("BPE")
        model["dropout"] = .null
        model["unk_token"] = options.unkID.flatMap { id in entries.first { $0.id == id }.map { .string($0.token) } } ?? .null
        model["continuing_subword_prefix"] = .null
        model["end_of_word_suffix"] = .null
        model["fuse_unk"] = .bool(options.fuseUnk)
        model["byte_fallback"] = .bool(options.byteFallback)
        model["ignore_merges"] = .bool(options.ignoreMerges)
        model["vocab"] = .object(vocab)
        model["merges"] = .array(spec.merges.map { .array([.string($0.0), .string($0.1)]) })
        return model
    }

    private func addedTokenJSON(_ t: AddedToken, withID: Bool) -> JSONValue {
        var o = JSONObject()
        if withID { o["id"] = .number(Double(t.id)) }
        o["content"] = .string(t.content)
        o["single_word"] = .bool(t.singleWord)
        o["lstrip"] = .bool(t.lstrip)
        o["rstrip"] = .bool(t.rstrip)
        o["normalized"] = .bool(t.normalized)
        o["special"] = .bool(t.special)
        return .object(o)
    }

    // MARK: - tokenizer_config.json, special_tokens_map.json

    /// transformers' tokenizer_config.json (keys sorted, as it writes them). add_bos_token /
    /// add_eos_token are written only when they describe the post-processor exactly (transformers
    /// and `Tokenizer.load` rebuild the post-processor from them); otherwise tokenizer.json's
    /// TemplateProcessing stands. `PreTrainedTokenizerFast` takes tokenizer.json as it is.
    func tokenizerConfigJSON() -> JSONValue {
        var o = JSONObject()
        let addBOS = bosTokenID.map { prefixIDs == [$0] } ?? false
        let addEOS = eosTokenID.map { suffixIDs == [$0] } ?? false
        if (addBOS || prefixIDs.isEmpty) && (addEOS || suffixIDs.isEmpty) {
            o["add_bos_token"] = .bool(addBOS)
            o["add_eos_token"] = .bool(addEOS)
        }
        var decoder = JSONObject()
        for t in addedTokens.sorted(by: { $0.id < $1.id }) { decoder[String(t.id)] = addedTokenJSON(t, withID: false) }
        o["added_tokens_decoder"] = .object(decoder)
        if let bosToken { o["bos_token"] = .string(bosToken) }
        if let chatTemplate { o["chat_template"] = .string(chatTemplate) }
        o["clean_up_tokenization_spaces"] = .bool(false)
        if let eosToken { o["eos_token"] = .string(eosToken) }
        if let t = padToken { o["pad_token"] = .string(t) }
        o["tokenizer_class"] = .string("PreTrainedTokenizerFast")
        if let t = unkToken { o["unk_token"] = .string(t) }
        return .object(o)
    }

    /// The special token names (it replaces a stale map an older tokenizer left in the directory,
    /// whose names `load` would otherwise read for keys the config lacks).
    func specialTokensMapJSON() -> JSONValue {
        var o = JSONObject()
        if let bosToken { o["bos_token"] = .string(bosToken) }
        if let eosToken { o["eos_token"] = .string(eosToken) }
        if let t = padToken { o["pad_token"] = .string(t) }
        if let t = unkToken { o["unk_token"] = .string(t) }
        return .object(o)
    }

    private var padToken: String? { spec.padToken }
    private var unkToken: String? { spec.unkToken }
}
