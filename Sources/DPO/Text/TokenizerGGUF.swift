/// The tokenizer in GGUF metadata (llama.cpp's `tokenizer.*` keys, gguf-py constants.py `Keys.Tokenizer`):
/// reading it as transformers' GGUF loader does (integrations/gguf/gguf_tokenizer_mapping.py), and
/// writing any tokenizer's keys so that a model saved to GGUF carries it.
///
/// Models: "gpt2" (byte-level BPE: tokens and merges, the pre-tokenizer named by
/// `tokenizer.ggml.pre`) and "llama" (SentencePiece-style BPE: tokens and scores,
/// SentencePieceBPE.swift). Token types (llama.cpp `llama_token_type`): control (3) tokens become
/// special added tokens, user-defined (4) ones plain added tokens, both matched in the raw text.
enum GGUFTokenType: Int {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

extension TokenizerSpec {
    /// The `tokenizer.ggml.pre` values the engine knows, with their pre-tokenizers. "smollm" is
    /// SmolLM2's tokenizer.json pre-tokenizer (digits split one by one, then GPT-2's regex).
    static func ggufPreTokenizer(_ name: String) -> (PreTokenizer, ignoreMerges: Bool)? {
        switch name {
        case "gpt2": return (.byteLevel(addPrefixSpace: false, useRegex: true), false)
        case "smollm": return (.sequence([.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)]), false)
        case "llama-bpe", "llama3", "llama-v3":
            return (.sequence([.split(.llama3), .byteLevel(addPrefixSpace: false, useRegex: false)]), true)
        case "qwen2": return (.sequence([.split(.qwen2), .byteLevel(addPrefixSpace: false, useRegex: false)]), false)
        default: return nil
        }
    }

    init(gguf metadata: GGUFMetadata) throws {
        func string(_ key: String) throws -> String? {
            guard let v = metadata[key] else { return nil }
            guard let s = v.string else { throw DPOError.format("\(key) is a \(v.type.name), not a STRING") }
            return s
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = metadata[key] else { return nil }
            guard let b = v.bool else { throw DPOError.format("\(key) is a \(v.type.name), not a BOOL") }
            return b
        }
        func id(_ key: String, count: Int) throws -> Int32? {
            guard let v = metadata[key] else { return nil }
            guard let i = v.int, i >= 0, i < count else { throw DPOError.format("\(key) (\(v)) is not a token id below \(count)") }
            return Int32(i)
        }
        guard let kind = try string("tokenizer.ggml.model") else { throw DPOError.format("no tokenizer.ggml.model: the file carries no tokenizer") }
        guard kind == "gpt2" || kind == "llama" else {
            throw DPOError.format("tokenizer.ggml.model '\(kind)' is not supported (only 'gpt2' and 'llama')")
        }
        guard let tokens = metadata["tokenizer.ggml.tokens"]?.strings, !tokens.isEmpty else {
            throw DPOError.format("tokenizer.ggml.tokens is missing or not an array of strings")
        }
        let n = tokens.count
        var types = [Int](repeating: GGUFTokenType.normal.rawValue, count: n)
        if let v = metadata["tokenizer.ggml.token_type"] {
            guard let list = v.array, list.count == n else { throw DPOError.format("tokenizer.ggml.token_type does not have \(n) entries") }
            for (i, t) in list.enumerated() {
                guard let k = t.int else { throw DPOError.format("tokenizer.ggml.token_type[\(i)] is not an integer") }
                types[i] = k
            }
        }
        // A repeated token string keeps its last id, as in transformers' dict.
        for (i, t) in tokens.enumerated() { vocab[t] = Int32(i) }
        tokenList = tokens
        if let v = metadata["tokenizer.ggml.merges"] {
            guard let list = v.strings else { throw DPOError.format("tokenizer.ggml.merges is not an array of strings") }
            merges.reserveCapacity(list.count)
            for (i, m) in list.enumerated() {
                guard let pair = splitMerge(m) else { throw DPOError.format("tokenizer.ggml.merges[\(i)] '\(m)' is not two tokens separated by a space") }
                merges.append(pair)
            }
        }

        var addBOS: Bool
        if kind == "gpt2" {
            guard let pre = try string("tokenizer.ggml.pre") else {
                throw DPOError.format("tokenizer.ggml.pre is missing: the byte-level pre-tokenizer is unknown")
            }
            guard let (p, ignoreMerges) = TokenizerSpec.ggufPreTokenizer(pre) else {
                throw DPOError.format("tokenizer.ggml.pre '\(pre)' is not supported (gpt2, smollm, llama-bpe, qwen2)")
            }
            guard metadata["tokenizer.ggml.merges"] != nil else { throw DPOError.format("tokenizer.ggml.merges is missing") }
            preTokenizer = p
            decoder = .byteLevel
            options.byteLevel = true
            options.ignoreMerges = ignoreMerges
            addBOS = false
            // Tokens outside the byte alphabet are read as their text (transformers respells them).
            var respelled = vocab
            for (t, i) in vocab where ByteLevel.bytes(of: t) == nil { respelled[ByteLevel.spell(Array(t.utf8))] = i }
            vocab = respelled
        } else {
            if merges.isEmpty {
                guard let v = metadata["tokenizer.ggml.scores"], let list = v.array, list.count == n else {
                    throw DPOError.format("tokenizer.ggml.scores is missing or does not have \(n) entries (and there are no merges)")
                }
                var scores: [Float] = []
                scores.reserveCapacity(n)
                for (i, s) in list.enumerated() {
                    guard let d = s.double else { throw DPOError.format("tokenizer.ggml.scores[\(i)] is not a number") }
                    scores.append(Float(d))
                }
                merges = SentencePieceBPE.merges(tokens: tokens, scores: scores)
            }
            let (p, d) = SentencePieceBPE.pipeline(addSpacePrefix: try bool("tokenizer.ggml.add_space_prefix") ?? true)
            preTokenizer = p
            decoder = d
            options.byteFallback = true
            options.fuseUnk = true
            addBOS = true
        }
        for (i, t) in tokens.enumerated() {
            // Control tokens of a byte-level vocabulary spelled outside its alphabet are llama.cpp
            // mislabels that transformers skips.
            if types[i] == GGUFTokenType.control.rawValue && (kind == "llama" || ByteLevel.bytes(of: t) != nil) {
                addedTokens.append(AddedToken(id: Int32(i), content: t, special: true, normalized: false))
            } else if types[i] == GGUFTokenType.userDefined.rawValue {
                addedTokens.append(AddedToken(id: Int32(i), content: t, special: false, normalized: false))
            }
        }
        addBOS = try bool("tokenizer.ggml.add_bos_token") ?? addBOS
        let addEOS = try bool("tokenizer.ggml.add_eos_token") ?? false
        bosToken = try id("tokenizer.ggml.bos_token_id", count: n).map { tokens[Int($0)] }
        eosToken = try id("tokenizer.ggml.eos_token_id", count: n).map { tokens[Int($0)] }
        unkToken = try id("tokenizer.ggml.unknown_token_id", count: n).map { tokens[Int($0)] }
        padToken = try id("tokenizer.ggml.padding_token_id", count: n).map { tokens[Int($0)] }
        postProcessor = .bosEOS(addBOS: addBOS && bosToken != nil, addEOS: addEOS && eosToken != nil)
        chatTemplate = try string("tokenizer.chat_template")
        var source = GGUFMetadata()
        for (key, value) in metadata.entries where key.hasPrefix("tokenizer.") { source[key] = value }
        ggufSource = source
    }
}

extension Tokenizer {
    /// The `tokenizer.*` metadata llama.cpp expects for this tokenizer, so that a model saved to
    /// GGUF carries it. A tokenizer read from GGUF gives back the keys it was read from.
    ///
    /// Otherwise (tokenizer.json): `tokenizer.ggml.model` "gpt2" for byte-level vocabularies (with
    /// `tokenizer.ggml.pre` named from the pre-tokenizer) or "llama"; the tokens by id (gaps as
    /// "[PAD<id>]", type unused), their types, the merges ("a b"), for "llama" scores (the
    /// negated id for normal tokens, 0 otherwise, which orders merges as the vocabulary was
    /// built), the special ids, add_bos_token / add_eos_token and the chat template.
    public func ggufMetadata() -> GGUFMetadata {
        if let source = spec.ggufSource { return source }
        var m = GGUFMetadata()
        let byteLevel = spec.options.byteLevel
        m["tokenizer.ggml.model"] = .string(byteLevel ? "gpt2" : "llama")
        if byteLevel, let pre = ggufPreName() { m["tokenizer.ggml.pre"] = .string(pre) }
        let count = vocabCount
        var names: [GGUFValue] = [], types: [GGUFValue] = [], scores: [GGUFValue] = []
        let added = Dictionary(addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for i in 0..<count {
            let id = Int32(i)
            var type = GGUFTokenType.normal
            var name = "[PAD\(i)]"
            if let a = added[id] {
                name = a.content
                type = a.special ? .control : .userDefined
            } else if let t = token(for: id) {
                name = t
                if id == unkTokenID { type = .unknown } else if !byteLevel && fallbackByte(t) != nil { type = .byte }
            } else {
                type = .unused
            }
            names.append(.string(name))
            types.append(.int32(Int32(type.rawValue)))
            scores.append(.float32(type == .normal ? -Float(i) : 0))
        }
        m["tokenizer.ggml.tokens"] = .array(.string, names)
        if !byteLevel { m["tokenizer.ggml.scores"] = .array(.float32, scores) }
        m["tokenizer.ggml.token_type"] = .array(.int32, types)
        m["tokenizer.ggml.merges"] = .array(.string, spec.merges.map { .string("\($0.0) \($0.1)") })
        if let id = bosTokenID { m["tokenizer.ggml.bos_token_id"] = .uint32(UInt32(id)) }
        if let id = eosTokenID { m["tokenizer.ggml.eos_token_id"] = .uint32(UInt32(id)) }
        if let id = unkTokenID { m["tokenizer.ggml.unknown_token_id"] = .uint32(UInt32(id)) }
        if let id = padTokenID { m["tokenizer.ggml.padding_token_id"] = .uint32(UInt32(id)) }
        m["tokenizer.ggml.add_bos_token"] = .bool(bosTokenID.map { prefixIDs.contains($0) } ?? false)
        m["tokenizer.ggml.add_eos_token"] = .bool(eosTokenID.map { suffixIDs.contains($0) } ?? false)
        if !byteLevel { m["tokenizer.ggml.add_space_prefix"] = .bool(addsSpacePrefix) }
        if let t = chatTemplate { m["tokenizer.chat_template"] = .string(t) }
        return m
    }

    /// One more than the largest id of the model's vocabulary and added tokens.
    private var vocabCount: Int {
        var top: Int32 = -1
        for id in spec.vocab.values { top = max(top, id) }
        for t in addedTokens { top = max(top, t.id) }
        return Int(top) + 1
    }

    /// The `tokenizer.ggml.pre` name of a byte-level pre-tokenizer, if llama.cpp has one.
    private func ggufPreName() -> String? {
        for name in ["smollm", "gpt2", "llama-bpe", "qwen2"] {
            guard let (p, ignoreMerges) = TokenizerSpec.ggufPreTokenizer(name) else { continue }
            if p == preTokenizer && (name != "llama-bpe" || ignoreMerges == spec.options.ignoreMerges) { return name }
        }
        // The same pre-tokenizers written without a Sequence around a single element.
        if preTokenizer == .sequence([.byteLevel(addPrefixSpace: false, useRegex: true)]) { return "gpt2" }
        return nil
    }

    /// Whether text gets a leading ▁ (Metaspace prepending, or a Prepend normalizer).
    private var addsSpacePrefix: Bool {
        if case .metaspace(_, let scheme, _) = preTokenizer { return scheme != .never }
        if case .sequence(let list) = normalizer, list.contains(where: { if case .prepend = $0 { return true } else { return false } }) { return true }
        if case .prepend = normalizer { return true }
        return false
    }
}
