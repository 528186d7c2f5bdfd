import DPO

/// How the command turns text into token ids and back. A model brings its own tokenizer (a GGUF
/// file's metadata, tokenizer.json in its directory, or --tokenizer PATH); a model without one can
/// use text only if it is sized for the built-in byte tokenizer (vocab_size 259), as the demo's are.
/// Anything else must give token ids: text is never tokenized with the wrong tokenizer.
enum TextCodec {
    case tokenizer(Tokenizer)
    case bytes
    /// No tokenizer for this model: text fields are an error naming the way out.
    case none(vocabSize: Int)

    /// The codec for a model loaded from `modelPath` (nil: a fresh model), or from `tokenizerPath`.
    static func forModel(path modelPath: String?, tokenizerPath: String?, vocabSize: Int) throws -> TextCodec {
        if let tokenizerPath {
            return try checked(try Tokenizer.load(path: tokenizerPath), tokenizerPath, vocabSize: vocabSize)
        }
        if let modelPath, Tokenizer.hasTokenizer(path: modelPath) {
            return try checked(try Tokenizer.load(path: modelPath), modelPath, vocabSize: vocabSize)
        }
        return vocabSize == ByteTokenizer.vocabSize ? .bytes : .none(vocabSize: vocabSize)
    }

    private static func checked(_ t: Tokenizer, _ path: String, vocabSize: Int) throws -> TextCodec {
        guard t.idCount <= vocabSize else {
            throw CLIError("the tokenizer of \(path) has token ids up to \(t.idCount - 1), beyond the model's vocab_size \(vocabSize)")
        }
        return .tokenizer(t)
    }

    var name: String {
        switch self {
        case .tokenizer: return "the model's tokenizer"
        case .bytes: return "the byte tokenizer"
        case .none: return "no tokenizer"
        }
    }

    private func unavailable(_ what: String) -> CLIError {
        guard case .none(let v) = self else { return CLIError(what) }
        return CLIError("\(what): this model has no tokenizer (no tokenizer.json or GGUF metadata) and vocab_size \(v) is not the byte tokenizer's \(ByteTokenizer.vocabSize); give --tokenizer PATH or token ids")
    }

    /// A prompt of a data row: BOS (if the tokenizer adds one) + the text's tokens.
    func encodePrompt(_ text: String) throws -> [Int32] {
        switch self {
        case .tokenizer(let t): return t.encode(text, addSpecialTokens: true)
        case .bytes: return [ByteTokenizer.bos] + ByteTokenizer.encode(text)
        case .none: throw unavailable("text prompt")
        }
    }

    /// A user message wrapped in the chat template with the generation prompt (the tokenizer's
    /// template; a plain prompt if it has none).
    func encodeChatPrompt(_ text: String) throws -> [Int32] {
        guard case .tokenizer(let t) = self, t.chatTemplate != nil else { return try encodePrompt(text) }
        let rendered = try t.applyChatTemplate([ChatMessage(role: "user", content: text)], addGenerationPrompt: true)
        return t.encode(rendered, addSpecialTokens: false)
    }

    /// A completion of a data row: the text's tokens + EOS (as TRL appends EOS).
    func encodeCompletion(_ text: String) throws -> [Int32] {
        switch self {
        case .tokenizer(let t):
            guard let eos = t.eosTokenID else { throw CLIError("the tokenizer has no EOS token to end a completion") }
            return t.encode(text, addSpecialTokens: false) + [eos]
        case .bytes: return ByteTokenizer.encode(text) + [ByteTokenizer.eos]
        case .none: throw unavailable("text completion")
        }
    }

    /// The text of generated ids (nil without a tokenizer: show ids).
    func decode(_ ids: [Int32]) -> String? {
        switch self {
        case .tokenizer(let t): return try? t.decode(ids, skipSpecialTokens: false)
        case .bytes: return ByteTokenizer.decode(ids)
        case .none: return nil
        }
    }
}
