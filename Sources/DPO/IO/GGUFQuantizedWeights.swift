/// Loading the frozen linear weights of a GGUF model as `QuantizedMatrix`es, in their stored
/// quantized form, under their Hugging Face names (the quantized counterpart of
/// `LlamaModel.load(ggufFile:)`, which dequantizes everything to fp32).
///
/// llama.cpp stores the rows of a llama q/k projection permuted (GGUFConfig.swift,
/// `ggufPermuteRows`). A row of a GGUF matrix is a whole number of blocks (the reader checks that
/// `ne[0]` is a multiple of the block size), so the permutation is undone on the quantized bytes,
/// once, when the matrix is loaded: each HF row is the byte copy of its GGUF row. The matrix then
/// *is* the HF-ordered W and its products need no row map.
extension QuantizedMatrix {
    /// The linear weights of one decoder layer, by their name after "model.layers.N.".
    public static let layerLinearNames = [
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    ]

    /// Every linear weight of every decoder layer of the GGUF model at `path`, by Hugging Face
    /// name ("model.layers.N.self_attn.q_proj.weight", ...), see `linearWeights(of:)`.
    public static func linearWeights(ggufFile path: String) throws -> [String: QuantizedMatrix] {
        try linearWeights(of: try GGUFFile.open(path: path))
    }

    /// Every linear weight of every decoder layer of `file` (llama or qwen2, as
    /// `LlamaModel.load(ggufFile:)` reads them), by Hugging Face name, each in its stored ggml type
    /// with llama q/k rows in Hugging Face order. Dequantized, each equals the parameter of that
    /// name in the fp32 model `LlamaModel.load(ggufFile:)` builds from the file. Throws
    /// `DPOError.format` naming the file and tensor when a tensor is missing, misshapen or of a
    /// type swift-dpo cannot dequantize.
    public static func linearWeights(of file: GGUFFile) throws -> [String: QuantizedMatrix] {
        let (config, layout) = try ggufLayout(file)
        var result: [String: QuantizedMatrix] = [:]
        for spec in layout.tensors where spec.name.hasPrefix("model.layers.") && spec.shape.count == 2 {
            result[spec.name] = try load(spec, from: file, config: config)
        }
        return result
    }

    /// The 2-D parameter `name` of the GGUF model in `file` (a layer's linear weight,
    /// "model.embed_tokens.weight", or an untied "lm_head.weight") as a `QuantizedMatrix`, as
    /// `linearWeights(of:)` loads it.
    public static func load(_ name: String, from file: GGUFFile) throws -> QuantizedMatrix {
        let (config, layout) = try ggufLayout(file)
        guard let spec = layout.tensor(named: name), spec.shape.count == 2 else {
            throw DPOError.invalidArgument("\(file.path): '\(name)' is not a matrix of the \(config.modelType) model the metadata describes")
        }
        return try load(spec, from: file, config: config)
    }

    /// The config and parameter layout the file's metadata implies.
    private static func ggufLayout(_ file: GGUFFile) throws -> (LlamaConfig, ParameterLayout) {
        let config = try LlamaConfig(gguf: file)
        // The tensor list is built only when the file could hold it (as LlamaModel.load does).
        let expected = ParameterLayout.tensorCount(config)
        guard expected <= file.tensors.count + 1024 else {
            throw DPOError.format("\(file.path): the metadata implies \(expected) tensors, the file has \(file.tensors.count)")
        }
        return (config, ParameterLayout(config: config))
    }

    private static func load(_ spec: TensorSpec, from file: GGUFFile, config: LlamaConfig) throws -> QuantizedMatrix {
        let (ggufName, info) = try file.readableTensor(for: spec)
        let (rows, columns) = (spec.shape[0], spec.shape[1])
        let bytes = try file.rawBytes(ggufName)
        let what = "\(file.path): tensor '\(ggufName)' (\(spec.name))"
        let (isQuery, permuted) = GGUFTensorNames.isPermuted(spec.name)
        let hd = config.resolvedHeadDim, heads = isQuery ? config.numAttentionHeads : config.numKeyValueHeads
        guard config.modelType == "llama" && permuted else {
            return try bytes.withUnsafeBytes {
                try QuantizedMatrix(type: info.type, outFeatures: rows, inFeatures: columns, bytes: $0, what: what)
            }
        }
        guard hd > 0, hd % 2 == 0, heads * hd == rows else {
            throw DPOError.format("\(file.path): tensor '\(ggufName)' has \(rows) rows, not \(heads) heads of an even head_dim \(hd)")
        }
        return try bytes.withUnsafeBytes {
            try QuantizedMatrix(type: info.type, outFeatures: rows, inFeatures: columns, bytes: $0, what: what,
                                sourceRow: { ggufRow(ofHFRow: $0, headDim: hd) })
        }
    }
}

/// The GGUF row that holds row `r` of a llama q/k projection in Hugging Face order: within each
/// head of `headDim` rows, HF row i * headDim/2 + j (i in {0, 1}) is stored at row 2j + i
/// (the map `ggufPermuteRows` applies to fp32 rows).
func ggufRow(ofHFRow r: Int, headDim: Int) -> Int {
    let half = headDim / 2, head = r / headDim, within = r % headDim
    return head * headDim + 2 * (within % half) + within / half
}
