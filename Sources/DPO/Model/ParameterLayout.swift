/// One named tensor inside a flat parameter buffer.
public struct TensorSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// Offsets of one decoder layer's tensors in the flat buffer (-1 where a bias is absent, and for
/// the linear matrices of a layout that omits them).
struct LayerOffsets {
    var inputNorm = 0, q = 0, qBias = -1, k = 0, kBias = -1, v = 0, vBias = -1, o = 0, oBias = -1
    var postNorm = 0, gate = 0, gateBias = -1, up = 0, upBias = -1, down = 0, downBias = -1
}

/// All parameters of a Llama model in one flat fp32 buffer (llm.c style), in checkpoint order,
/// each tensor addressed by its Hugging Face name. Gradients and optimizer moments use the same
/// layout, so every per-parameter loop is a loop over one buffer.
///
/// A layout may omit the matrices: the seven linear matrices of every decoder layer (q/k/v/o_proj,
/// gate/up/down_proj), the embedding and an untied LM head: a model whose frozen base keeps them
/// quantized outside the buffer (`LlamaModel.load(ggufFile:keepBaseQuantized:)`). Then they are
/// not in `tensors`, their offsets (and `embed`, `lmHead`) are -1, and the buffer holds the norms
/// and biases only.
public struct ParameterLayout: Sendable {
    public let tensors: [TensorSpec]
    public let count: Int
    /// True when the matrices are not in the buffer (see above).
    public let omitsMatrices: Bool
    let embed: Int
    let layers: [LayerOffsets]
    let finalNorm: Int
    /// Offset of the LM head matrix [vocab, hidden]: the embedding when tied.
    let lmHead: Int
    private let index: [String: Int]

    public init(config c: LlamaConfig, omitMatrices: Bool = false) {
        var specs: [TensorSpec] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            specs.append(TensorSpec(name: name, shape: shape, offset: offset))
            defer { offset += shape.reduce(1, *) }
            return offset
        }
        /// A matrix: -1 and no tensor when the layout omits them.
        func matrix(_ name: String, _ shape: [Int]) -> Int { omitMatrices ? -1 : add(name, shape) }
        let h = c.hiddenSize, hd = c.resolvedHeadDim
        let qDim = c.numAttentionHeads * hd, kvDim = c.numKeyValueHeads * hd
        embed = matrix("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerOffsets] = []
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)."
            var o = LayerOffsets()
            o.inputNorm = add(p + "input_layernorm.weight", [h])
            o.q = matrix(p + "self_attn.q_proj.weight", [qDim, h])
            if c.qkvBias { o.qBias = add(p + "self_attn.q_proj.bias", [qDim]) }
            o.k = matrix(p + "self_attn.k_proj.weight", [kvDim, h])
            if c.qkvBias { o.kBias = add(p + "self_attn.k_proj.bias", [kvDim]) }
            o.v = matrix(p + "self_attn.v_proj.weight", [kvDim, h])
            if c.qkvBias { o.vBias = add(p + "self_attn.v_proj.bias", [kvDim]) }
            o.o = matrix(p + "self_attn.o_proj.weight", [h, qDim])
            if c.outputProjectionBias { o.oBias = add(p + "self_attn.o_proj.bias", [h]) }
            o.postNorm = add(p + "post_attention_layernorm.weight", [h])
            o.gate = matrix(p + "mlp.gate_proj.weight", [c.intermediateSize, h])
            if c.mlpBias { o.gateBias = add(p + "mlp.gate_proj.bias", [c.intermediateSize]) }
            o.up = matrix(p + "mlp.up_proj.weight", [c.intermediateSize, h])
            if c.mlpBias { o.upBias = add(p + "mlp.up_proj.bias", [c.intermediateSize]) }
            o.down = matrix(p + "mlp.down_proj.weight", [h, c.intermediateSize])
            if c.mlpBias { o.downBias = add(p + "mlp.down_proj.bias", [h]) }
            layers.append(o)
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [h])
        lmHead = c.tieWordEmbeddings ? embed : matrix("lm_head.weight", [c.vocabSize, h])
        tensors = specs
        count = offset
        omitsMatrices = omitMatrices
        var index: [String: Int] = [:]
        for (i, s) in specs.enumerated() { index[s.name] = i }
        self.index = index
    }

    /// The parameter count a layout of `c` has (the sum `init` computes), in Double so that it can
    /// be checked against memory before any tensor list or buffer is built.
    public static func parameterCount(_ c: LlamaConfig, omitMatrices: Bool = false) -> Double {
        let h = Double(c.hiddenSize), hd = Double(c.resolvedHeadDim), i = Double(c.intermediateSize)
        let q = Double(c.numAttentionHeads) * hd, kv = Double(c.numKeyValueHeads) * hd
        var layer = 2 * h + (omitMatrices ? 0 : q * h + 2 * kv * h + h * q + 3 * i * h)
        if c.qkvBias { layer += q + 2 * kv }
        if c.outputProjectionBias { layer += h }
        if c.mlpBias { layer += 2 * i + h }
        let embed = omitMatrices ? 0 : Double(c.vocabSize) * h
        return embed * (c.tieWordEmbeddings ? 1 : 2) + Double(c.numHiddenLayers) * layer + h
    }

    /// The number of tensors a layout of `c` has (`tensors.count`), without building it.
    public static func tensorCount(_ c: LlamaConfig, omitMatrices: Bool = false) -> Int {
        var perLayer = omitMatrices ? 2 : 9
        if c.qkvBias { perLayer += 3 }
        if c.outputProjectionBias { perLayer += 1 }
        if c.mlpBias { perLayer += 3 }
        return (omitMatrices ? 1 : 2 + (c.tieWordEmbeddings ? 0 : 1)) + c.numHiddenLayers * perLayer
    }

    public func tensor(named name: String) -> TensorSpec? {
        index[name].map { tensors[$0] }
    }

    /// Whether a tensor is an RMSNorm weight (initialised to 1).
    static func isNormWeight(_ name: String) -> Bool {
        name.hasSuffix("layernorm.weight") || name == "model.norm.weight"
    }
}
