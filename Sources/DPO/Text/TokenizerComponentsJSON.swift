/// The tokenizer.json objects of the pipeline components (HF tokenizers' serde format,
/// tokenizers/src/{normalizers,pre_tokenizers,decoders,processors}): the inverse of the readers
/// in TokenizerJSON.swift, used by `Tokenizer.huggingFaceFiles()` (TokenizerExport.swift).

extension Normalizer {
    var json: JSONValue {
        switch self {
        case .prepend(let p):
            return .object(["type": .string("Prepend"), "prepend": .string(String(decoding: p, as: UTF8.self))])
        case .replace(let pattern, let content):
            return .object(["type": .string("Replace"), "pattern": .object(["String": .string(String(decoding: pattern, as: UTF8.self))]),
                            "content": .string(String(decoding: content, as: UTF8.self))])
        case .nfc:
            return .object(["type": .string("NFC")])
        case .sequence(let list):
            return .object(["type": .string("Sequence"), "normalizers": .array(list.map(\.json))])
        }
    }
}

extension PreTokenizer {
    var json: JSONValue {
        switch self {
        case .split(let pattern):
            return .object(["type": .string("Split"), "pattern": .object(["Regex": .string(pattern.rawValue)]),
                            "behavior": .string("Isolated"), "invert": .bool(false)])
        case .byteLevel(let addPrefixSpace, let useRegex):
            return .object(["type": .string("ByteLevel"), "add_prefix_space": .bool(addPrefixSpace),
                            "trim_offsets": .bool(true), "use_regex": .bool(useRegex)])
        case .digits(let individual):
            return .object(["type": .string("Digits"), "individual_digits": .bool(individual)])
        case .metaspace(let replacement, let scheme, let split):
            return .object(["type": .string("Metaspace"), "replacement": .string(String(replacement)),
                            "prepend_scheme": .string(scheme.rawValue), "split": .bool(split)])
        case .sequence(let list):
            return .object(["type": .string("Sequence"), "pretokenizers": .array(list.map(\.json))])
        }
    }
}

extension TokenDecoder {
    var json: JSONValue {
        switch self {
        case .byteLevel:
            return .object(["type": .string("ByteLevel"), "add_prefix_space": .bool(true), "trim_offsets": .bool(true),
                            "use_regex": .bool(true)])
        case .replace(let pattern, let content):
            return .object(["type": .string("Replace"), "pattern": .object(["String": .string(pattern)]),
                            "content": .string(content)])
        case .byteFallback:
            return .object(["type": .string("ByteFallback")])
        case .fuse:
            return .object(["type": .string("Fuse")])
        case .strip(let content, let start, let stop):
            return .object(["type": .string("Strip"), "content": .string(String(content)),
                            "start": .number(Double(start)), "stop": .number(Double(stop))])
        case .metaspace(let replacement, let scheme):
            return .object(["type": .string("Metaspace"), "replacement": .string(String(replacement)),
                            "prepend_scheme": .string(scheme.rawValue), "split": .bool(true)])
        case .sequence(let list):
            return .object(["type": .string("Sequence"), "decoders": .array(list.map(\.json))])
        }
    }
}

/// HF's `TemplateProcessing` that puts `prefix` before and `suffix` after the text, as
/// transformers builds it from add_bos_token / add_eos_token (tokenization_utils_tokenizers.py
/// `update_post_processor`): single "P $A:0 S", pair "P $A:0 S P:1 $B:1 S:1". `name(id)` is the
/// token string of an id; the special tokens are keyed by it (by "name#id" if one string has two ids).
func templateProcessingJSON(prefix: [Int32], suffix: [Int32], name: (Int32) -> String) -> JSONValue {
    var keys: [Int32: String] = [:], specials = JSONObject()
    for id in prefix + suffix where keys[id] == nil {
        var key = name(id)
        if specials[key] != nil { key += "#\(id)" }
        keys[id] = key
        specials[key] = .object(["id": .string(key), "ids": .array([.number(Double(id))]), "tokens": .array([.string(name(id))])])
    }
    func special(_ id: Int32, _ typeID: Int) -> JSONValue {
        .object(["SpecialToken": .object(["id": .string(keys[id] ?? ""), "type_id": .number(Double(typeID))])])
    }
    func sequence(_ name: String, _ typeID: Int) -> JSONValue {
        .object(["Sequence": .object(["id": .string(name), "type_id": .number(Double(typeID))])])
    }
    let single = prefix.map { special($0, 0) } + [sequence("A", 0)] + suffix.map { special($0, 0) }
    let pair = single + prefix.map { special($0, 1) } + [sequence("B", 1)] + suffix.map { special($0, 1) }
    return .object(["type": .string("TemplateProcessing"), "single": .array(single), "pair": .array(pair),
                    "special_tokens": .object(specials)])
}
