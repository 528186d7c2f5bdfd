/// Everything a `Tokenizer` is built from, as read from tokenizer.json (TokenizerJSON.swift) or
/// GGUF metadata (TokenizerGGUF.swift).
struct TokenizerSpec {
    /// What the post-processor adds with `addSpecialTokens`.
    enum PostProcessor: Equatable {
        /// Fixed ids before and after the text (HF `TemplateProcessing`, or none).
        case template(prefix: [Int32], suffix: [Int32])
        /// BOS and/or EOS by flag (transformers' `add_bos_token` / `add_eos_token`, GGUF's
        /// `tokenizer.ggml.add_bos_token` / `add_eos_token`).
        case bosEOS(addBOS: Bool, addEOS: Bool)
    }

    /// The model's vocabulary as the file spells it (byte-level tokens in the byte alphabet).
    var vocab: [String: Int32] = [:]
    /// Merges in rank order.
    var merges: [(String, String)] = []
    var options = BPEModel.Options()
    var normalizer: Normalizer? = nil
    var preTokenizer: PreTokenizer? = nil
    var decoder: TokenDecoder? = nil
    var addedTokens: [AddedToken] = []
    var postProcessor = PostProcessor.template(prefix: [], suffix: [])
    var bosToken: String? = nil
    var eosToken: String? = nil
    var padToken: String? = nil
    var unkToken: String? = nil
    var chatTemplate: String? = nil
    /// GGUF: the token strings by id as the file lists them, a repeated string at each of its ids
    /// (`vocab` keeps only its last id).
    var tokenList: [String]? = nil
    /// The `tokenizer.*` metadata this was read from, if it came from GGUF (written back as is).
    var ggufSource: GGUFMetadata? = nil
}

/// A merge written as "left right": exactly two tokens separated by one space (split on the
/// space byte, not on Characters: a space followed by a joiner is one Character in Swift).
func splitMerge(_ s: String) -> (String, String)? {
    let parts = s.utf8.split(separator: 0x20, omittingEmptySubsequences: false)
    guard parts.count == 2 else { return nil }
    return (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self))
}
