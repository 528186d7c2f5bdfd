// The mapping between a GGUF file's model description and swift-dpo's `LlamaConfig` /
// `ParameterLayout`, in both directions, as llama.cpp's convert_hf_to_gguf.py writes it and
// transformers' GGUF loader (integrations/ggml.py, modeling_gguf_pytorch_utils.py) reads it:
//
//   <arch>.block_count                        num_hidden_layers
//   <arch>.context_length                     max_position_embeddings
//   <arch>.embedding_length                   hidden_size
//   <arch>.feed_forward_length                intermediate_size
//   <arch>.attention.head_count               num_attention_heads
//   <arch>.attention.head_count_kv            num_key_value_heads (default: head_count)
//   <arch>.attention.key_length/value_length  head_dim (default: embedding_length / head_count)
//   <arch>.rope.dimension_count               must equal head_dim (no partial rotary)
//   <arch>.rope.freq_base                     rope_theta (default 10000)
//   <arch>.attention.layer_norm_rms_epsilon   rms_norm_eps
//   <arch>.vocab_size                         vocab_size (else the token list's length)
//   tokenizer.ggml.{bos,eos,padding}_token_id bos_token_id, eos_token_id, pad_token_id
//   no `output.weight` tensor                 tie_word_embeddings
//   `rope_freqs.weight` tensor                llama3 rope scaling (recognised, see below)
//
// llama.cpp's llama architecture stores the q and k projection rows of each head interleaved
// (convert_hf_to_gguf.py `LlamaModel.permute`, for its "normal" rope); qwen2 is stored as is.

/// llama.cpp's tensor names and their Hugging Face names.
enum GGUFTensorNames {
    /// Per-layer names: (llama.cpp suffix after "blk.N.", HF suffix after "model.layers.N.").
    static let layer: [(gguf: String, hf: String)] = [
        ("attn_norm.weight", "input_layernorm.weight"),
        ("attn_q.weight", "self_attn.q_proj.weight"), ("attn_q.bias", "self_attn.q_proj.bias"),
        ("attn_k.weight", "self_attn.k_proj.weight"), ("attn_k.bias", "self_attn.k_proj.bias"),
        ("attn_v.weight", "self_attn.v_proj.weight"), ("attn_v.bias", "self_attn.v_proj.bias"),
        ("attn_output.weight", "self_attn.o_proj.weight"), ("attn_output.bias", "self_attn.o_proj.bias"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("ffn_gate.weight", "mlp.gate_proj.weight"), ("ffn_gate.bias", "mlp.gate_proj.bias"),
        ("ffn_up.weight", "mlp.up_proj.weight"), ("ffn_up.bias", "mlp.up_proj.bias"),
        ("ffn_down.weight", "mlp.down_proj.weight"), ("ffn_down.bias", "mlp.down_proj.bias"),
    ]
    static let global: [(gguf: String, hf: String)] = [
        ("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ]

    /// The llama.cpp name of an HF parameter name of the layout.
    static func gguf(_ hf: String) -> String? {
        if let g = global.first(where: { $0.hf == hf }) { return g.gguf }
        let prefix = "model.layers."
        guard hf.hasPrefix(prefix) else { return nil }
        let rest = hf.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: ".") else { return nil }
        let suffix = String(rest[rest.index(after: dot)...])
        return layer.first(where: { $0.hf == suffix }).map { "blk.\(rest[..<dot]).\($0.gguf)" }
    }

    /// Whether an HF name is a q or k projection (weight or bias), whose rows llama.cpp permutes.
    static func isPermuted(_ hf: String) -> (isQuery: Bool, permuted: Bool) {
        let q = hf.hasSuffix("self_attn.q_proj.weight") || hf.hasSuffix("self_attn.q_proj.bias")
        let k = hf.hasSuffix("self_attn.k_proj.weight") || hf.hasSuffix("self_attn.k_proj.bias")
        return (q, q || k)
    }
}

/// llama.cpp's row permutation of q/k projections (convert_hf_to_gguf.py `LlamaModel.permute`):
/// within each head of `headDim` rows, HF row i * headDim/2 + j (i in {0, 1}) is stored at row
/// 2j + i. `toGGUF` applies it, otherwise it is undone. `columns` is 1 for a bias.
func ggufPermuteRows(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, heads: Int, headDim: Int,
                     columns: Int, toGGUF: Bool) {
    let half = headDim / 2
    for h in 0..<heads {
        for i in 0..<2 {
            for j in 0..<half {
                let hfRow = h * headDim + i * half + j, ggufRow = h * headDim + 2 * j + i
                let (from, to) = toGGUF ? (hfRow, ggufRow) : (ggufRow, hfRow)
                (dst + to * columns).update(from: src + from * columns, count: columns)
            }
        }
    }
}

/// The llama3 rope-scaling parameter sets of released models, tried in order when a GGUF has a
/// `rope_freqs.weight` tensor (llama.cpp stores only the per-frequency factors, not the
/// parameters): Llama 3.1 (factor 8) and Llama 3.2 (factor 32), both low/high frequency factor
/// 1/4 and original context 8192.
let ggufKnownLlama3Scalings: [RopeScaling] = [
    .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192),
    .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192),
]

/// The `rope_freqs.weight` factors convert_hf_to_gguf.py writes for llama3 scaling (fp32 as it
/// computes them with torch): 1 for short wavelengths, `factor` for long ones, and
/// 1 / ((1 - smooth) / factor + smooth) between.
func ggufLlama3RopeFactors(headDim: Int, theta: Double, scaling: RopeScaling) -> [Float] {
    guard case .llama3(let factor, let low, let high, let original) = scaling else { return [] }
    let freqs = ropeInverseFrequencies(headDim: headDim, theta: theta, scaling: .none)
    let lowWavelen = Float(Double(original) / low), highWavelen = Float(Double(original) / high)
    return freqs.map { f in
        let wavelen = Float(2 * Double.pi) / f
        if wavelen < highWavelen { return 1 }
        if wavelen > lowWavelen { return Float(factor) }
        let smooth = (Float(original) / wavelen - Float(low)) / Float(high - low)
        return 1 / ((1 - smooth) / Float(factor) + smooth)
    }
}

extension LlamaConfig {
    /// The architectures a GGUF may have (`general.architecture`).
    static let ggufArchitectures = ["llama", "qwen2"]

    /// Reads the config a GGUF file describes (see the table at the top of this file). Refuses,
    /// naming the key or tensor, anything swift-dpo's model cannot represent exactly.
    init(gguf file: GGUFFile) throws {
        let m = file.metadata
        func fail(_ message: String) -> DPOError { .format("\(file.path): \(message)") }
        guard let arch = m["general.architecture"]?.string else {
            throw fail("general.architecture is missing or not a string")
        }
        guard LlamaConfig.ggufArchitectures.contains(arch) else {
            throw fail("architecture '\(arch)' is not supported (supported: \(LlamaConfig.ggufArchitectures.joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int? {
            guard let v = m[key] else { return nil }
            guard let i = v.int, i >= 0 else {
                if case .array = v { throw fail("\(key) is an array (per-layer values are not supported)") }
                throw fail("\(key) must be a non-negative integer, got \(v.type.name)")
            }
            return i
        }
        func required(_ key: String) throws -> Int {
            guard let i = try int(key) else { throw fail("\(key) is missing") }
            return i
        }
        func number(_ key: String) throws -> Double? {
            guard let v = m[key] else { return nil }
            guard let d = v.double else { throw fail("\(key) must be a number, got \(v.type.name)") }
            return d
        }
        let a = arch + "."
        self.init()
        modelType = arch
        numHiddenLayers = try required(a + "block_count")
        hiddenSize = try required(a + "embedding_length")
        intermediateSize = try required(a + "feed_forward_length")
        numAttentionHeads = try required(a + "attention.head_count")
        numKeyValueHeads = try int(a + "attention.head_count_kv") ?? numAttentionHeads
        if let n = try int(a + "context_length") { maxPositionEmbeddings = n }
        guard numAttentionHeads > 0 else { throw fail("\(a)attention.head_count must be > 0") }
        let derivedHeadDim = hiddenSize / numAttentionHeads
        let keyLength = try int(a + "attention.key_length"), valueLength = try int(a + "attention.value_length")
        let dim = keyLength ?? derivedHeadDim
        guard (valueLength ?? dim) == dim else {
            throw fail("\(a)attention.value_length \(valueLength ?? 0) differs from the key length \(dim) (not supported)")
        }
        if dim != derivedHeadDim || hiddenSize % numAttentionHeads != 0 { headDim = dim }
        if let rot = try int(a + "rope.dimension_count"), rot != dim {
            throw fail("\(a)rope.dimension_count \(rot) differs from the head size \(dim): partial rotary embeddings are not supported")
        }
        ropeTheta = try number(a + "rope.freq_base") ?? 10000
        guard let eps = try number(a + "attention.layer_norm_rms_epsilon") else {
            throw fail("\(a)attention.layer_norm_rms_epsilon is missing")
        }
        rmsNormEps = eps
        if let type = m[a + "rope.scaling.type"] {
            guard type.string == "none" else {
                throw fail("\(a)rope.scaling.type '\(type.string ?? type.type.name)' is not supported (only llama3 scaling given by a rope_freqs.weight tensor)")
            }
        }
        if let experts = try int(a + "expert_count"), experts > 0 {
            throw fail("\(a)expert_count \(experts): mixture-of-experts models are not supported")
        }
        guard let embed = file.tensor(named: "token_embd.weight") else { throw fail("tensor 'token_embd.weight' is missing") }
        vocabSize = try int(a + "vocab_size") ?? m["tokenizer.ggml.tokens"]?.array?.count ?? embed.shape[0]
        tieWordEmbeddings = file.tensor(named: "output.weight") == nil
        if arch == "llama" {
            attentionBias = file.tensor(named: "blk.0.attn_q.bias") != nil
            mlpBias = file.tensor(named: "blk.0.ffn_gate.bias") != nil
        }
        bosTokenId = try int("tokenizer.ggml.bos_token_id")
        eosTokenIds = try int("tokenizer.ggml.eos_token_id").map { [$0] } ?? []
        padTokenId = try int("tokenizer.ggml.padding_token_id")
        if let freqs = file.tensor(named: "rope_freqs.weight") {
            ropeScaling = try LlamaConfig.recogniseRopeFreqs(freqs, file: file, headDim: dim, theta: ropeTheta)
        }
        do { try validate() } catch DPOError.invalidArgument(let message) { throw fail(message) }
    }

    /// The llama3 scaling whose factors (computed as convert_hf_to_gguf.py does) equal the file's
    /// `rope_freqs.weight` bit for bit, among `ggufKnownLlama3Scalings`; anything else is refused.
    private static func recogniseRopeFreqs(_ info: GGUFTensorInfo, file: GGUFFile, headDim: Int, theta: Double) throws -> RopeScaling {
        guard info.shape == [headDim / 2], headDim > 0, headDim <= 1 << 20 else {
            throw DPOError.format("\(file.path): tensor 'rope_freqs.weight' has shape \(info.shape), expected [\(headDim / 2)]")
        }
        let factors = try file.floats("rope_freqs.weight")
        for scaling in ggufKnownLlama3Scalings {
            if ggufLlama3RopeFactors(headDim: headDim, theta: theta, scaling: scaling).map(\.bitPattern) == factors.map(\.bitPattern) {
                return scaling
            }
        }
        throw DPOError.format("\(file.path): tensor 'rope_freqs.weight' (per-frequency rope factors) matches no llama3 rope scaling swift-dpo recognises (factor 8 or 32, low/high frequency factor 1/4, original context 8192); this rope scaling is not supported")
    }

    /// The metadata llama.cpp's converter writes for this config (architecture keys and the
    /// tokenizer ids), keyed for `modelType` ("llama" or "qwen2").
    func ggufMetadata() -> GGUFMetadata {
        var m = GGUFMetadata()
        let a = modelType + "."
        func u32(_ v: Int) -> GGUFValue { .uint32(UInt32(clamping: v)) }
        m["general.architecture"] = .string(modelType)
        m[a + "block_count"] = u32(numHiddenLayers)
        m[a + "context_length"] = u32(maxPositionEmbeddings)
        m[a + "embedding_length"] = u32(hiddenSize)
        m[a + "feed_forward_length"] = u32(intermediateSize)
        m[a + "attention.head_count"] = u32(numAttentionHeads)
        m[a + "attention.head_count_kv"] = u32(numKeyValueHeads)
        m[a + "rope.freq_base"] = .float32(Float(ropeTheta))
        m[a + "attention.layer_norm_rms_epsilon"] = .float32(Float(rmsNormEps))
        if resolvedHeadDim != hiddenSize / numAttentionHeads || hiddenSize % numAttentionHeads != 0 {
            m[a + "attention.key_length"] = u32(resolvedHeadDim)
            m[a + "attention.value_length"] = u32(resolvedHeadDim)
        }
        m[a + "vocab_size"] = u32(vocabSize)
        m[a + "rope.dimension_count"] = u32(resolvedHeadDim)
        return m
    }

    /// The tokenizer ids of this config as GGUF metadata (for files without tokenizer metadata).
    func ggufTokenIds() -> GGUFMetadata {
        var m = GGUFMetadata()
        if let id = bosTokenId { m["tokenizer.ggml.bos_token_id"] = .uint32(UInt32(clamping: id)) }
        if let id = eosTokenIds.first { m["tokenizer.ggml.eos_token_id"] = .uint32(UInt32(clamping: id)) }
        if let id = padTokenId { m["tokenizer.ggml.padding_token_id"] = .uint32(UInt32(clamping: id)) }
        return m
    }
}
