/// Turns dataset rows into token ids exactly as TRL 1.16's trainers prepare their datasets
/// (`DPOTrainer._prepare_dataset`, `SFTTrainer._prepare_dataset` and the helpers of
/// trl/data_utils.py), with a model's own tokenizer and chat template:
///
/// - text is tokenized as `tokenizer(text)` (with the special tokens the tokenizer's
///   post-processor adds); conversations are rendered by the chat template and tokenized without
///   special tokens (transformers' `apply_chat_template(tokenize=True)`);
/// - a prompt is rendered with the generation prompt, prompt + completion without it, and the
///   completion starts where the two token sequences first differ (`common_prefix_length`);
/// - text completions get the EOS token's text appended unless they already end with it.
///
/// One row at a time (`preference(_:format:)`, `sft(_:format:)`), so rows can be streamed;
/// `PreferenceDatasetPreparer` / `SFTDatasetPreparer` add what TRL does across the dataset.
public struct DatasetTokenizer {
    /// nil: only rows of token ids can be prepared (a text row is an error that says so).
    public let tokenizer: Tokenizer?
    /// Token ids of token-id rows must be below this (the model's vocabulary; default the tokenizer's).
    public let vocabSize: Int
    public let config: DataConfig
    /// The chat template in use (`config.chatTemplate`, else the tokenizer's), nil if neither.
    public let template: ChatTemplate?
    /// Whether `template` has `{% generation %}` blocks (needed by `assistantOnlyLoss`).
    public let templateHasGenerationBlocks: Bool
    /// The special token strings transformers passes to every template (`special_tokens_map`).
    let specialTokens: [String: JinjaValue]

    /// - Parameters:
    ///   - tokenizer: the model's tokenizer, or nil for datasets of token ids only.
    ///   - vocabSize: the bound of token ids in token-id rows (the model's vocabulary size); nil:
    ///     the tokenizer's `vocabSize`. One of the two is needed.
    public init(tokenizer: Tokenizer?, vocabSize: Int? = nil, config: DataConfig = DataConfig()) throws {
        try config.validate()
        guard let v = vocabSize ?? tokenizer?.vocabSize, v > 0 else {
            throw DPOError.invalidArgument("a dataset needs a tokenizer or a vocabulary size")
        }
        self.tokenizer = tokenizer
        self.vocabSize = v
        self.config = config
        let source = try config.chatTemplate ?? config.chatTemplatePath.map(Self.readTemplate) ?? tokenizer?.chatTemplate
        template = try source.map { try ChatTemplate(source: $0) }
        templateHasGenerationBlocks = template?.hasGenerationBlocks ?? false
        var special: [String: JinjaValue] = [:]
        if let tokenizer {
            let named: [(String, String?)] = [("bos_token", tokenizer.bosToken), ("eos_token", tokenizer.eosToken),
                                              ("unk_token", tokenizer.unkTokenID.flatMap(tokenizer.token(for:))),
                                              ("pad_token", tokenizer.padTokenID.flatMap(tokenizer.token(for:)))]
            for case let (key, value?) in named { special[key] = .string(value) }
        }
        specialTokens = special
    }

    /// The template of `chat_template_path`: the file, or `chat_template.jinja` in a directory.
    static func readTemplate(_ path: String) throws -> String {
        let file = isDirectory(path) ? joinPath(path, "chat_template.jinja") : path
        let bytes: [UInt8]
        do { bytes = try readFile(file, limit: 1 << 24) } catch let e as DPOError {
            throw DPOError.invalidArgument("chat_template_path: \(e.message)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DPOError.invalidArgument("chat_template_path: '\(file)' is not UTF-8 text")
        }
        return text
    }

    // MARK: Shared steps

    /// The tokenizer, which every row of text needs.
    func textTokenizer(_ row: DatasetRow) throws -> Tokenizer {
        guard let tokenizer else {
            throw DPOError.invalidArgument("\(row.location): a row of text needs a tokenizer (the model's own, or one given: processing_class in Python, --tokenizer on the command line); without one only token-id rows can be used")
        }
        return tokenizer
    }

    /// `tokenizer(text)["input_ids"]`.
    func encodeText(_ text: String, row: DatasetRow) throws -> [Int32] {
        try textTokenizer(row).encode(text, addSpecialTokens: true)
    }

    /// The EOS token's text, which TRL appends to text completions.
    func eosText(_ row: DatasetRow) throws -> String {
        guard let eos = try textTokenizer(row).eosToken else {
            throw DPOError.invalidArgument("\(row.location): the tokenizer has no EOS token, which TRL appends to text completions")
        }
        return eos
    }

    /// `text` with `suffix` appended unless it already ends with it (Python's `str.endswith`:
    /// code points, here the equivalent UTF-8 bytes).
    static func appending(_ suffix: String, to text: String) -> String {
        let t = text.utf8, s = suffix.utf8
        if t.count >= s.count && t.suffix(s.count).elementsEqual(s) { return text }
        return text + suffix
    }

    /// The chat template rendered over `messages` (transformers' `apply_chat_template`), with the
    /// row's `tools` and `chat_template_kwargs` as TRL passes them.
    func render(_ messages: [JSONValue], addGenerationPrompt: Bool, row: DatasetRow) throws -> (text: String, generationSpans: [Range<Int>]) {
        _ = try textTokenizer(row)
        guard let template else {
            throw DPOError.invalidArgument("\(row.location): the row is conversational but the tokenizer has no chat template (set DataConfig.chatTemplate)")
        }
        var context = specialTokens
        context["messages"] = try ChatTemplate.messages(json: .array(messages))
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        context["tools"] = try tools(row)
        context["documents"] = JinjaValue.none
        if row.has("chat_template_kwargs") {
            let v = try row.required("chat_template_kwargs")
            guard let kwargs = v.object else { throw row.error("chat_template_kwargs", "must be an object, not \(v.kindName)") }
            for key in kwargs.keys { context[key] = kwargs[key].map(JinjaValue.init) }
        }
        do { return try template.renderTracked(context: context) } catch let e as DPOError {
            throw DPOError.invalidArgument("\(row.location): \(e.message)")
        }
    }

    /// The row's `tools` column: a list, or JSON text of one (TRL parses strings), or none.
    private func tools(_ row: DatasetRow) throws -> JinjaValue {
        guard row.has("tools") else { return .none }
        var value = try row.required("tools")
        if let text = value.string {
            do { value = try JSON.parse(text) } catch let e as DPOError { throw row.error("tools", "is not valid JSON: \(e.message)") }
        }
        guard value.array != nil else { throw row.error("tools", "must be a list of tool definitions, not \(value.kindName)") }
        return JinjaValue(value)
    }

    /// `apply_chat_template(messages, tokenize=True)["input_ids"]`.
    func encodeConversation(_ messages: [JSONValue], addGenerationPrompt: Bool, row: DatasetRow) throws -> [Int32] {
        try textTokenizer(row).encode(try render(messages, addGenerationPrompt: addGenerationPrompt, row: row).text, addSpecialTokens: false)
    }

    /// TRL's `common_prefix_length`.
    static func commonPrefixLength(_ a: [Int32], _ b: [Int32]) -> Int {
        var n = 0
        while n < a.count && n < b.count && a[n] == b[n] { n += 1 }
        return n
    }
}
