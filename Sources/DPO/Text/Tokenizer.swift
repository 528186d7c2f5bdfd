/// A model's own tokenizer, loaded from a Hugging Face `tokenizer.json` (with
/// `tokenizer_config.json` and `special_tokens_map.json`) or from GGUF tokenizer metadata.
///
/// It implements what HF tokenizers does for the BPE tokenizers of Llama-family models: byte-level
/// BPE with the GPT-2 / SmolLM2, Llama 3 and Qwen2 pre-tokenizers, and SentencePiece-style BPE with
/// byte fallback and the ▁ rules (Llama 2, TinyLlama, Mistral). Added tokens are matched before
/// pre-tokenization and never split. Anything else (unigram, WordPiece, an unknown pre-tokenizer
/// regex or `tokenizer.ggml.pre`, an unknown normalizer) is refused by name.
///
/// Encoding follows HF's pipeline (tokenizers/src/tokenizer/mod.rs): cut out non-normalized added
/// tokens (AddedTokens.swift), normalize each remaining piece (Normalizers.swift), cut out
/// normalized added tokens, pre-tokenize into words (PreTokenizers.swift, SplitPatterns.swift),
/// encode each word with BPE (BPEModel.swift), then add the special tokens of the post-processor.
/// Decoding maps ids to token strings and runs the decoders (Decoders.swift).
///
/// Thread-safe: encodes may run concurrently (one of them uses the word cache at a time).
public final class Tokenizer {
    /// Token strings by id (model vocabulary and added tokens; nil in gaps).
    private let tokens: [String?]
    /// Ids by token string: added tokens first, then the model's vocabulary.
    private let ids: [String: Int32]
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    let addedTokens: [AddedToken]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let specialContents: Set<String>
    /// Ids the post-processor puts before and after the text with `addSpecialTokens`.
    let prefixIDs: [Int32], suffixIDs: [Int32]
    /// What `ggufMetadata()` needs beyond the above.
    let spec: TokenizerSpec

    public let bosTokenID: Int32?
    public let eosTokenID: Int32?
    public let padTokenID: Int32?
    public let unkTokenID: Int32?
    public let bosToken: String?
    public let eosToken: String?
    /// `len(tokenizer)` in transformers: the distinct tokens of the vocabulary and added tokens.
    public let vocabSize: Int
    /// One more than the largest token id: every id `encode` gives is below it, and a model needs
    /// at least this many embedding rows. It equals `vocabSize` unless ids have gaps or a GGUF
    /// token list repeats a string.
    public let idCount: Int
    /// The chat template (Jinja source), from tokenizer_config.json or `tokenizer.chat_template`.
    public let chatTemplate: String?

    /// Loads a model directory holding `tokenizer.json`, a `.gguf` file's tokenizer, or the
    /// tokenizer of the one `.gguf` in a directory without tokenizer.json and config.json.
    public static func load(path: String) throws -> Tokenizer {
        if isDirectory(path) {
            if !fileExists(joinPath(path, "tokenizer.json")) && !fileExists(joinPath(path, "config.json")),
               let gguf = LlamaModel.ggufFileInDirectory(path) {
                return try load(path: gguf)
            }
            return try Tokenizer(spec: TokenizerSpec(directory: path))
        }
        guard fileExists(path) else { throw DPOError.io("tokenizer '\(path)' does not exist") }
        guard GGUFFile.isGGUF(path: path) else {
            throw DPOError.invalidArgument("tokenizer '\(path)' is neither a model directory with tokenizer.json nor a GGUF file")
        }
        let file = try GGUFFile.open(path: path)
        do { return try Tokenizer(ggufMetadata: file.metadata) } catch DPOError.format(let m) {
            throw DPOError.format("\(path): \(m)")
        }
    }

    /// The tokenizer a GGUF file's `tokenizer.*` metadata describes.
    public convenience init(ggufMetadata: GGUFMetadata) throws {
        try self.init(spec: TokenizerSpec(gguf: ggufMetadata))
    }

    init(spec: TokenizerSpec) throws {
        self.spec = spec
        model = try BPEModel(vocab: spec.vocab, merges: spec.merges, options: spec.options)
        normalizer = spec.normalizer
        preTokenizer = spec.preTokenizer
        decoder = spec.decoder
        addedTokens = spec.addedTokens

        // Token strings by id: the model's, then added tokens (HF's id_to_token gives an added
        // token's normalized content when it is normalized).
        let entries = spec.vocab.count + spec.addedTokens.count
        var maxID: Int32 = -1
        for id in spec.vocab.values { maxID = max(maxID, id) }
        for t in spec.addedTokens { maxID = max(maxID, t.id) }
        guard Int(maxID) < 2 * entries + 1024 else {
            throw DPOError.format("token id \(maxID) is far beyond the \(entries) tokens of the vocabulary")
        }
        var byID = [String?](repeating: nil, count: max(Int(maxID) + 1, spec.tokenList?.count ?? 0))
        var byString: [String: Int32] = spec.vocab
        for (token, id) in spec.vocab {
            guard id >= 0 else { throw DPOError.format("token '\(token)' has the negative id \(id)") }
            byID[Int(id)] = token
        }
        var rawTokens: [AddedToken] = [], rawPatterns: [[UInt8]] = []
        var normTokens: [AddedToken] = [], normPatterns: [[UInt8]] = []
        var special = Set<String>()
        for t in spec.addedTokens {
            guard t.id >= 0 else { throw DPOError.format("added token '\(t.content)' has the negative id \(t.id)") }
            var shown = t.content
            if t.normalized {
                let pattern = spec.normalizer?.apply(Array(t.content.utf8)) ?? Array(t.content.utf8)
                shown = String(decoding: pattern, as: UTF8.self)
                normTokens.append(t); normPatterns.append(pattern)
            } else {
                rawTokens.append(t); rawPatterns.append(Array(t.content.utf8))
            }
            byID[Int(t.id)] = shown
            byString[t.content] = t.id
            if t.special { special.insert(t.content) }
        }
        // A GGUF token list's repeated strings decode at each of their ids (llama.cpp's id_to_token).
        for (i, t) in (spec.tokenList ?? []).enumerated() where byID[i] == nil { byID[i] = t }
        tokens = byID
        idCount = byID.count
        ids = byString
        rawMatcher = AddedTokenMatcher(tokens: rawTokens, patterns: rawPatterns)
        normalizedMatcher = AddedTokenMatcher(tokens: normTokens, patterns: normPatterns)
        specialContents = special
        vocabSize = byString.count

        func idOf(_ name: String?, _ what: String) throws -> Int32? {
            guard let name else { return nil }
            guard let id = byString[name] else { throw DPOError.format("the \(what) token '\(name)' is not in the vocabulary") }
            return id
        }
        bosToken = spec.bosToken
        eosToken = spec.eosToken
        bosTokenID = try idOf(spec.bosToken, "BOS")
        eosTokenID = try idOf(spec.eosToken, "EOS")
        padTokenID = try idOf(spec.padToken, "padding")
        unkTokenID = try idOf(spec.unkToken, "unknown")
        chatTemplate = spec.chatTemplate
        switch spec.postProcessor {
        case .template(let prefix, let suffix):
            prefixIDs = prefix; suffixIDs = suffix
        case .bosEOS(let addBOS, let addEOS):
            prefixIDs = addBOS ? (bosTokenID.map { [$0] } ?? []) : []
            suffixIDs = addEOS ? (eosTokenID.map { [$0] } ?? []) : []
        }
        for id in prefixIDs + suffixIDs where id < 0 || Int(id) >= byID.count || byID[Int(id)] == nil {
            throw DPOError.format("the post-processor adds the token id \(id), which is not in the vocabulary")
        }
    }

    // MARK: - Encoding

    /// The token ids of `text`; with `addSpecialTokens`, with the special tokens the tokenizer's
    /// post-processor adds (BOS for Llama 2 / Llama 3 layouts, none for SmolLM2 or Qwen2).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        var out: [Int32] = addSpecialTokens ? prefixIDs : []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        var bytes = Array(text.utf8)
        if bytes.isEmpty { return out + (addSpecialTokens ? suffixIDs : []) }
        model.withCache { useCache in
            bytes.withUnsafeBufferPointer { buf in
                var segments: [TextSegment] = []
                rawMatcher.split(buf, 0..<buf.count, into: &segments)
                for segment in segments {
                    switch segment {
                    case .token(let id): out.append(id)
                    case .text(let r): encodePiece(Array(buf[r]), startsText: r.lowerBound == 0, useCache: useCache, into: &out)
                    }
                }
            }
        }
        bytes.removeAll()
        if addSpecialTokens { out += suffixIDs }
        return out
    }

    /// Normalizes a piece between raw added tokens, cuts out normalized added tokens, and
    /// encodes the words of the rest.
    private func encodePiece(_ piece: [UInt8], startsText: Bool, useCache: Bool, into out: inout [Int32]) {
        let normalized = normalizer?.apply(piece) ?? piece
        var segments: [TextSegment] = []
        normalized.withUnsafeBufferPointer { buf in
            normalizedMatcher.split(buf, 0..<buf.count, into: &segments)
        }
        for segment in segments {
            switch segment {
            case .token(let id): out.append(id)
            case .text(let r):
                var words = Words(Array(normalized[r]), startsText: startsText && r.lowerBound == 0)
                preTokenizer?.apply(&words)
                words.storage.withUnsafeBufferPointer { buf in
                    for w in words.ranges { model.tokenize(buf, w, useCache: useCache, into: &out) }
                }
            }
        }
    }

    // MARK: - Decoding

    /// The text of `ids`. With `skipSpecialTokens`, special added tokens are left out. An id
    /// outside the vocabulary is an error naming it and its position.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        var strings: [String] = []
        strings.reserveCapacity(ids.count)
        for (position, id) in ids.enumerated() {
            guard id >= 0, Int(id) < tokens.count, let token = tokens[Int(id)] else {
                throw DPOError.invalidArgument("token id \(id) at position \(position) is not in the vocabulary (\(vocabSize) tokens)")
            }
            if skipSpecialTokens && specialContents.contains(token) { continue }
            strings.append(token)
        }
        guard let decoder else { return strings.joined(separator: " ") }
        return decoder.decodeChain(strings).joined()
    }

    /// The token string of `id` (an added token's normalized content when it is normalized, as
    /// HF's `id_to_token`), or nil if there is none.
    public func token(for id: Int32) -> String? {
        guard id >= 0, Int(id) < tokens.count else { return nil }
        return tokens[Int(id)]
    }

    /// The id of a token string (an added token's content or a vocabulary token), or nil.
    public func id(for token: String) -> Int32? { ids[token] }

    /// Whether `id` is a special added token (skipped by `decode(skipSpecialTokens: true)`).
    public func isSpecial(_ id: Int32) -> Bool {
        token(for: id).map { specialContents.contains($0) } ?? false
    }
}
