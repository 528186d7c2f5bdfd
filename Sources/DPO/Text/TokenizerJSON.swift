/// Reading a Hugging Face tokenizer from a model directory: `tokenizer.json` (HF tokenizers'
/// serialization: model, added_tokens, normalizer, pre_tokenizer, post_processor, decoder), plus
/// `tokenizer_config.json` (special token names, add_bos_token / add_eos_token, chat_template) and
/// `special_tokens_map.json` when present.
extension TokenizerSpec {
    /// The largest tokenizer.json read (Llama 3's is 9 MB, Gemma's 34 MB).
    static let maxJSONSize = 64 << 20

    init(directory: String) throws {
        let path = joinPath(directory, "tokenizer.json")
        guard fileExists(path) else { throw DPOError.io("no tokenizer.json in '\(directory)'") }
        let root = try TokenizerSpec.readJSON(path, limit: TokenizerSpec.maxJSONSize)
        do { try self.init(tokenizerJSON: root) } catch DPOError.format(let m) {
            throw DPOError.format("\(path): \(m)")
        }
        let configPath = joinPath(directory, "tokenizer_config.json")
        let mapPath = joinPath(directory, "special_tokens_map.json")
        let config = fileExists(configPath) ? try TokenizerSpec.readJSON(configPath, limit: FileSizeLimit.json) : JSONObject()
        let map = fileExists(mapPath) ? try TokenizerSpec.readJSON(mapPath, limit: FileSizeLimit.json) : JSONObject()
        do { try applyConfig(config, specialTokensMap: map) } catch DPOError.format(let m) {
            throw DPOError.format("\(configPath): \(m)")
        }
    }

    private static func readJSON(_ path: String, limit: Int) throws -> JSONObject {
        let value: JSONValue
        do { value = try JSON.parse(try readFile(path, limit: limit)) } catch DPOError.format(let m) {
            throw DPOError.format("\(path): \(m)")
        }
        guard let object = value.object else { throw DPOError.format("\(path): not a JSON object") }
        return object
    }

    /// The tokenizer.json part.
    init(tokenizerJSON root: JSONObject) throws {
        guard let model = root["model"]?.object else { throw DPOError.format("no 'model' object") }
        let type = model["type"]?.string ?? "BPE"
        guard type == "BPE" else { throw DPOError.format("model type '\(type)' is not supported (only BPE)") }
        if let d = model["dropout"], !d.isNull, d.double != 0 { throw DPOError.format("BPE dropout is not supported") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[key], !v.isNull, v.string != "" { throw DPOError.format("BPE '\(key)' is not supported") }
        }
        guard let vocabObject = model["vocab"]?.object else { throw DPOError.format("model has no 'vocab' object") }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(vocabObject.count)
        for key in vocabObject.keys {
            guard let id = vocabObject[key]?.int, let id32 = Int32(exactly: id), id32 >= 0 else {
                throw DPOError.format("vocab entry '\(key)' has no valid id")
            }
            vocab[key] = id32
        }
        self.vocab = vocab
        var merges: [(String, String)] = []
        for (i, m) in (model["merges"]?.array ?? []).enumerated() {
            if let s = m.string {
                guard let pair = splitMerge(s) else { throw DPOError.format("merge \(i) '\(s)' is not two tokens separated by a space") }
                merges.append(pair)
            } else if let pair = m.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string {
                merges.append((a, b))
            } else {
                throw DPOError.format("merge \(i) is neither \"a b\" nor [a, b]")
            }
        }
        self.merges = merges
        options.byteFallback = model["byte_fallback"]?.bool ?? false
        options.fuseUnk = model["fuse_unk"]?.bool ?? false
        options.ignoreMerges = model["ignore_merges"]?.bool ?? false
        if let unk = model["unk_token"]?.string {
            guard let id = vocab[unk] else { throw DPOError.format("the unknown token '\(unk)' is not in the vocabulary") }
            options.unkID = id
            unkToken = unk
        }

        for (i, item) in (root["added_tokens"]?.array ?? []).enumerated() {
            guard let o = item.object, let id = o["id"]?.int, let id32 = Int32(exactly: id), let content = o["content"]?.string else {
                throw DPOError.format("added token \(i) has no id or content")
            }
            var t = AddedToken(id: id32, content: content, special: o["special"]?.bool ?? false, normalized: o["normalized"]?.bool ?? true)
            t.singleWord = o["single_word"]?.bool ?? false
            t.lstrip = o["lstrip"]?.bool ?? false
            t.rstrip = o["rstrip"]?.bool ?? false
            addedTokens.append(t)
        }
        normalizer = try TokenizerSpec.normalizer(root["normalizer"])
        preTokenizer = try TokenizerSpec.preTokenizer(root["pre_tokenizer"])
        decoder = try TokenizerSpec.decoder(root["decoder"])
        options.byteLevel = preTokenizer?.isByteLevel ?? false
        postProcessor = try TokenizerSpec.postProcessor(root["post_processor"])
    }

    /// tokenizer_config.json and special_tokens_map.json.
    mutating func applyConfig(_ config: JSONObject, specialTokensMap map: JSONObject) throws {
        func tokenName(_ key: String) -> String? {
            for source in [config, map] {
                guard let v = source[key] else { continue }
                if let s = v.string { return s }
                if let s = v.object?["content"]?.string { return s }
                if v.isNull { return nil }
            }
            return nil
        }
        bosToken = tokenName("bos_token")
        eosToken = tokenName("eos_token")
        padToken = tokenName("pad_token")
        if let unk = tokenName("unk_token") { unkToken = unk }
        // transformers (TokenizersBackend) rebuilds the post-processor from the flags when the
        // config sets either, or when tokenizer.json has none.
        let addBOS = config["add_bos_token"]?.bool, addEOS = config["add_eos_token"]?.bool
        if addBOS != nil || addEOS != nil {
            postProcessor = .bosEOS(addBOS: (addBOS ?? false) && bosToken != nil, addEOS: (addEOS ?? false) && eosToken != nil)
        }
        if let t = config["chat_template"] {
            if let s = t.string {
                chatTemplate = s
            } else if let list = t.array {
                // A list of named templates: the one named "default".
                chatTemplate = list.first { $0.object?["name"]?.string == "default" }?.object?["template"]?.string
            }
        }
    }

    // MARK: - Components

    private static func type(_ o: JSONObject, _ what: String) throws -> String {
        guard let t = o["type"]?.string else { throw DPOError.format("\(what) without a 'type'") }
        return t
    }

    /// A `{"String": s}` pattern (a `{"Regex": r}` one is refused: no regex engine).
    private static func literalPattern(_ v: JSONValue?, _ what: String) throws -> String {
        guard let o = v?.object else { throw DPOError.format("\(what) has no pattern") }
        if let s = o["String"]?.string { return s }
        if let r = o["Regex"]?.string { throw DPOError.format("\(what) with the regex '\(r)' is not supported") }
        throw DPOError.format("\(what) has an unknown pattern")
    }

    private static func scalar(_ v: JSONValue?, _ what: String) throws -> Unicode.Scalar {
        guard let s = v?.string, s.unicodeScalars.count == 1, let c = s.unicodeScalars.first else {
            throw DPOError.format("\(what) is not one character")
        }
        return c
    }

    static func normalizer(_ v: JSONValue?) throws -> Normalizer? {
        guard let v, !v.isNull else { return nil }
        guard let o = v.object else { throw DPOError.format("normalizer is not an object") }
        switch try type(o, "normalizer") {
        case "Sequence":
            return .sequence(try (o["normalizers"]?.array ?? []).compactMap { try normalizer($0) })
        case "Prepend":
            guard let p = o["prepend"]?.string else { throw DPOError.format("Prepend normalizer without 'prepend'") }
            return .prepend(Array(p.utf8))
        case "Replace":
            let pattern = try literalPattern(o["pattern"], "Replace normalizer")
            guard !pattern.isEmpty, let content = o["content"]?.string else { throw DPOError.format("Replace normalizer without pattern or content") }
            return .replace(pattern: Array(pattern.utf8), content: Array(content.utf8))
        case "NFC":
            return .nfc
        case let other:
            throw DPOError.format("normalizer '\(other)' is not supported")
        }
    }

    static func preTokenizer(_ v: JSONValue?) throws -> PreTokenizer? {
        guard let v, !v.isNull else { return nil }
        guard let o = v.object else { throw DPOError.format("pre_tokenizer is not an object") }
        switch try type(o, "pre_tokenizer") {
        case "Sequence":
            return .sequence(try (o["pretokenizers"]?.array ?? []).compactMap { try preTokenizer($0) })
        case "Split":
            guard let regex = o["pattern"]?.object?["Regex"]?.string else {
                throw DPOError.format("Split pre-tokenizer without a regex pattern is not supported")
            }
            guard let pattern = SplitPattern(rawValue: regex) else {
                throw DPOError.format("Split pre-tokenizer regex '\(regex)' is not one the engine knows (GPT-2, Llama 3, Qwen2)")
            }
            let behavior = o["behavior"]?.string ?? "Isolated"
            guard behavior == "Isolated", o["invert"]?.bool != true else {
                throw DPOError.format("Split pre-tokenizer behavior '\(behavior)'\(o["invert"]?.bool == true ? " inverted" : "") is not supported")
            }
            return .split(pattern)
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: o["add_prefix_space"]?.bool ?? true, useRegex: o["use_regex"]?.bool ?? true)
        case "Digits":
            return .digits(individual: o["individual_digits"]?.bool ?? false)
        case "Metaspace":
            let replacement = try scalar(o["replacement"], "Metaspace replacement")
            var scheme = PreTokenizer.PrependScheme.always
            if let s = o["prepend_scheme"]?.string {
                guard let p = PreTokenizer.PrependScheme(rawValue: s) else { throw DPOError.format("Metaspace prepend_scheme '\(s)' is unknown") }
                scheme = p
            }
            if o["add_prefix_space"]?.bool == false { scheme = .never }
            return .metaspace(replacement: replacement, prependScheme: scheme, split: o["split"]?.bool ?? true)
        case let other:
            throw DPOError.format("pre-tokenizer '\(other)' is not supported")
        }
    }

    static func decoder(_ v: JSONValue?) throws -> TokenDecoder? {
        guard let v, !v.isNull else { return nil }
        guard let o = v.object else { throw DPOError.format("decoder is not an object") }
        switch try type(o, "decoder") {
        case "Sequence":
            return .sequence(try (o["decoders"]?.array ?? []).compactMap { try decoder($0) })
        case "ByteLevel":
            return .byteLevel
        case "Replace":
            let pattern = try literalPattern(o["pattern"], "Replace decoder")
            guard !pattern.isEmpty, let content = o["content"]?.string else { throw DPOError.format("Replace decoder without pattern or content") }
            return .replace(pattern: pattern, content: content)
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Strip":
            guard let start = o["start"]?.int, let stop = o["stop"]?.int, start >= 0, stop >= 0 else {
                throw DPOError.format("Strip decoder without valid start and stop")
            }
            return .strip(content: try scalar(o["content"], "Strip decoder content"), start: start, stop: stop)
        case "Metaspace":
            var scheme = PreTokenizer.PrependScheme.always
            if let s = o["prepend_scheme"]?.string, let p = PreTokenizer.PrependScheme(rawValue: s) { scheme = p }
            if o["add_prefix_space"]?.bool == false { scheme = .never }
            return .metaspace(replacement: try scalar(o["replacement"], "Metaspace decoder replacement"), prependScheme: scheme)
        case let other:
            throw DPOError.format("decoder '\(other)' is not supported")
        }
    }

    static func postProcessor(_ v: JSONValue?) throws -> PostProcessor {
        guard let v, !v.isNull else { return .template(prefix: [], suffix: []) }
        guard let o = v.object else { throw DPOError.format("post_processor is not an object") }
        switch try type(o, "post_processor") {
        case "ByteLevel":
            return .template(prefix: [], suffix: [])
        case "Sequence":
            var prefix: [Int32] = [], suffix: [Int32] = []
            for p in o["processors"]?.array ?? [] {
                if case .template(let a, let b) = try postProcessor(p) { prefix += a; suffix = b + suffix }
            }
            return .template(prefix: prefix, suffix: suffix)
        case "TemplateProcessing":
            let specials = o["special_tokens"]?.object ?? JSONObject()
            var prefix: [Int32] = [], suffix: [Int32] = []
            var seenSequence = false
            for item in o["single"]?.array ?? [] {
                if item.object?["Sequence"] != nil { seenSequence = true; continue }
                guard let name = item.object?["SpecialToken"]?.object?["id"]?.string,
                      let idList = specials[name]?.object?["ids"]?.array else {
                    throw DPOError.format("TemplateProcessing item is neither a sequence nor a known special token")
                }
                for id in idList {
                    guard let i = id.int, let i32 = Int32(exactly: i) else { throw DPOError.format("TemplateProcessing token '\(name)' has an invalid id") }
                    if seenSequence { suffix.append(i32) } else { prefix.append(i32) }
                }
            }
            return .template(prefix: prefix, suffix: suffix)
        case let other:
            throw DPOError.format("post-processor '\(other)' is not supported")
        }
    }
}
