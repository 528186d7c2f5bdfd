/// The built-in byte-level tokenizer: token ids 0...255 are the UTF-8 bytes, then BOS, EOS and PAD.
/// Models created for it have `vocab_size` 259. Used by the demo and by the command line for text
/// data; real checkpoints bring their own tokenizer, which stays with the host.
public enum ByteTokenizer {
    public static let bos: Int32 = 256
    public static let eos: Int32 = 257
    public static let pad: Int32 = 258
    public static let vocabSize = 259

    /// The UTF-8 bytes of `text` as token ids (no BOS/EOS added).
    public static func encode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }

    /// Text of the byte tokens in `ids` (special tokens are skipped; invalid UTF-8 is repaired).
    public static func decode(_ ids: [Int32]) -> String {
        String(decoding: ids.compactMap { $0 >= 0 && $0 < 256 ? UInt8($0) : nil }, as: UTF8.self)
    }

    /// A model config sized for this tokenizer (special ids set, tied embeddings).
    public static func modelConfig(hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int,
                                   kvHeads: Int) -> LlamaConfig {
        var c = LlamaConfig(vocabSize: vocabSize, hiddenSize: hiddenSize, intermediateSize: intermediateSize,
                            numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kvHeads,
                            tieWordEmbeddings: true)
        c.bosTokenId = Int(bos); c.eosTokenIds = [Int(eos)]; c.padTokenId = Int(pad)
        c.rmsNormEps = 1e-5
        c.maxPositionEmbeddings = 512
        return c
    }
}
