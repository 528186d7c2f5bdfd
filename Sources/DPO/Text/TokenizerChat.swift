/// A tokenizer's chat template (Jinja, ChatTemplate.swift) applied as transformers'
/// `apply_chat_template` does, and where a model keeps its tokenizer.
extension Tokenizer {
    /// The longest text the C and Python doors pass to `encode` (a bound on their buffers).
    public static let maxTextBytes = 1 << 28

    /// The tokenizer's chat template rendered over `messages` with its BOS/EOS token strings:
    /// transformers' `apply_chat_template(messages, add_generation_prompt, tokenize=False)`. The
    /// result already holds the template's special tokens: encode it with `addSpecialTokens: false`,
    /// as transformers does with `tokenize=True` (see `chatTemplateIDs`).
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) throws -> String {
        guard let source = chatTemplate else {
            throw DPOError.invalidArgument("the tokenizer has no chat template")
        }
        let template = try ChatTemplate(source: source)
        return try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                   bosToken: bosToken, eosToken: eosToken)
    }

    /// The token ids of `applyChatTemplate` (transformers' `tokenize=True`).
    public func chatTemplateIDs(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) throws -> [Int32] {
        encode(try applyChatTemplate(messages, addGenerationPrompt: addGenerationPrompt), addSpecialTokens: false)
    }

    /// True if `path` holds a tokenizer `load(path:)` would try: a GGUF file whose metadata has
    /// one, a directory with tokenizer.json, or a directory with one such GGUF file and no
    /// config.json. A GGUF that cannot be read counts as one, so that `load` reports why.
    public static func hasTokenizer(path: String) -> Bool {
        if GGUFFile.isGGUF(path: path) { return ggufCarriesTokenizer(path) }
        guard isDirectory(path) else { return false }
        if fileExists(joinPath(path, "tokenizer.json")) { return true }
        guard !fileExists(joinPath(path, "config.json")), let gguf = LlamaModel.ggufFileInDirectory(path) else { return false }
        return ggufCarriesTokenizer(gguf)
    }

    /// False only for a readable GGUF without `tokenizer.ggml.model` (e.g. one swift-dpo wrote
    /// for a byte-tokenizer model).
    private static func ggufCarriesTokenizer(_ path: String) -> Bool {
        guard let file = try? GGUFFile.open(path: path) else { return true }
        return file.metadata["tokenizer.ggml.model"] != nil
    }
}
