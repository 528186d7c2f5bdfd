import CDPOHeader
import DPO

/// dpo_model_config <-> LlamaConfig, and config.json text -> LlamaConfig, with the bounds checks
/// the engine needs before it multiplies dimensions.

extension LlamaConfig {
    /// A config from the C struct; errors name the field ("config->hidden_size").
    init(_ s: dpo_model_config) throws {
        self.init()
        var t = s.model_type
        let type = withUnsafeBytes(of: &t) { raw -> String? in
            guard let end = raw.firstIndex(of: 0) else { return nil }
            return String(decoding: raw[..<end], as: UTF8.self)
        }
        guard let type else { throw APIError.invalid("config->model_type is not NUL-terminated within 16 bytes") }
        modelType = type
        func dim(_ v: Int64, _ name: String) throws -> Int {
            try ConfigGuard.checkDimension(name, v)
            return Int(v)
        }
        vocabSize = try dim(s.vocab_size, "vocab_size")
        hiddenSize = try dim(s.hidden_size, "hidden_size")
        intermediateSize = try dim(s.intermediate_size, "intermediate_size")
        numHiddenLayers = try dim(s.num_hidden_layers, "num_hidden_layers")
        numAttentionHeads = try dim(s.num_attention_heads, "num_attention_heads")
        numKeyValueHeads = try dim(s.num_key_value_heads, "num_key_value_heads")
        if s.head_dim < 0 { throw APIError.invalid("config->head_dim = \(s.head_dim) must be > 0, or 0 for hidden_size / num_attention_heads") }
        headDim = s.head_dim == 0 ? nil : try dim(s.head_dim, "head_dim")
        maxPositionEmbeddings = try dim(s.max_position_embeddings, "max_position_embeddings")
        initializerRange = s.initializer_range
        rmsNormEps = s.rms_norm_eps
        ropeTheta = s.rope_theta
        tieWordEmbeddings = try readFlag(s.tie_word_embeddings, "config->tie_word_embeddings")
        attentionBias = try readFlag(s.attention_bias, "config->attention_bias")
        mlpBias = try readFlag(s.mlp_bias, "config->mlp_bias")
        if s.reserved != 0 { throw APIError.invalid("config->reserved = \(s.reserved) must be 0") }
        func tokenID(_ v: Int64, _ name: String) throws -> Int? {
            if v == -1 { return nil }
            return try checkedInt(v, "config->\(name)", 0...Int64(Int32.max))
        }
        bosTokenId = try tokenID(s.bos_token_id, "bos_token_id")
        padTokenId = try tokenID(s.pad_token_id, "pad_token_id")
        let n = try checkedInt(s.num_eos_token_ids, "config->num_eos_token_ids", 0...Int64(DPO_MAX_EOS_TOKEN_IDS))
        var ids = s.eos_token_ids
        eosTokenIds = try withUnsafeBytes(of: &ids) { raw in
            try (0..<n).map { i in
                try checkedInt(raw.load(fromByteOffset: i * 8, as: Int64.self), "config->eos_token_ids[\(i)]", 0...Int64(Int32.max))
            }
        }
        try validate()
    }

    /// The C struct of this config. Refuses what the struct cannot hold.
    func cStruct() throws -> dpo_model_config {
        var s = dpo_model_config()
        s.struct_size = MemoryLayout<dpo_model_config>.size
        let type = Array(modelType.utf8)
        if type.count > 15 { throw APIError.invalid("model_type '\(modelType)' is longer than 15 bytes: use dpo_model_config_json") }
        withUnsafeMutableBytes(of: &s.model_type) { raw in
            for (i, b) in type.enumerated() { raw[i] = b }
            raw[type.count] = 0
        }
        s.vocab_size = Int64(vocabSize)
        s.hidden_size = Int64(hiddenSize)
        s.intermediate_size = Int64(intermediateSize)
        s.num_hidden_layers = Int64(numHiddenLayers)
        s.num_attention_heads = Int64(numAttentionHeads)
        s.num_key_value_heads = Int64(numKeyValueHeads)
        s.head_dim = Int64(headDim ?? 0)
        s.max_position_embeddings = Int64(maxPositionEmbeddings)
        s.initializer_range = initializerRange
        s.rms_norm_eps = rmsNormEps
        s.rope_theta = ropeTheta
        s.tie_word_embeddings = tieWordEmbeddings ? 1 : 0
        s.attention_bias = attentionBias ? 1 : 0
        s.mlp_bias = mlpBias ? 1 : 0
        s.bos_token_id = Int64(bosTokenId ?? -1)
        s.pad_token_id = Int64(padTokenId ?? -1)
        if eosTokenIds.count > Int(DPO_MAX_EOS_TOKEN_IDS) {
            throw APIError.invalid("the model has \(eosTokenIds.count) eos_token_id values, more than DPO_MAX_EOS_TOKEN_IDS: use dpo_model_config_json")
        }
        s.num_eos_token_ids = Int64(eosTokenIds.count)
        let eos = eosTokenIds
        withUnsafeMutableBytes(of: &s.eos_token_ids) { raw in
            for (i, id) in eos.enumerated() { raw.storeBytes(of: Int64(id), toByteOffset: i * 8, as: Int64.self) }
        }
        return s
    }

    /// A config from config.json text supplied by the host (`argument` names it in messages):
    /// malformed text or fields are invalid arguments.
    init(jsonText text: String, _ argument: String) throws {
        let value: JSONValue
        do { value = try JSON.parse(text) } catch let e as DPOError {
            throw APIError.invalid("\(argument) is not valid JSON: \(e.message)")
        }
        guard let object = value.object else { throw APIError.invalid("\(argument) is not a JSON object") }
        try ConfigGuard.checkJSON(object, argument, fileError: false)
        do { try self.init(json: value) } catch let e as DPOError {
            throw APIError.invalid("\(argument): \(e.message)")
        }
    }
}

/// Before the engine loads `directory/config.json`: the dimension bounds (as format errors). A
/// missing or unparsable config is left for the engine to report with its own message, and so is
/// memory: the engine checks the weights file against the config first (a small folder whose
/// config describes a large model is a format error, as from every door), then the memory.
func guardModelDirectory(_ directory: String) throws {
    let path = directory.hasSuffix("/") ? directory + "config.json" : directory + "/config.json"
    guard fileExists(path), let bytes = try? readFile(path), let value = try? JSON.parse(bytes),
          let object = value.object else { return }
    try ConfigGuard.checkJSON(object, path, fileError: true)
}
