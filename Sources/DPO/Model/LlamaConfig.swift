/// RoPE frequency scaling. Only the types whose math swift-dpo implements; others are refused.
public enum RopeScaling: Equatable, Sendable {
    case none
    /// Llama 3.x: `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int)
}

/// A Llama-family decoder's shape and settings, with Hugging Face `config.json` names and defaults
/// (transformers' `LlamaConfig`). `model_type` "llama" covers Llama 2/3, SmolLM/SmolLM2 and
/// TinyLlama; "qwen2" is the same decoder with q/k/v biases.
public struct LlamaConfig: Equatable, Sendable {
    public var modelType: String = "llama"
    public var vocabSize: Int = 32000
    public var hiddenSize: Int = 4096
    public var intermediateSize: Int = 11008
    public var numHiddenLayers: Int = 32
    public var numAttentionHeads: Int = 32
    public var numKeyValueHeads: Int = 32
    /// Per-head width; `hidden_size / num_attention_heads` when the checkpoint does not say.
    public var headDim: Int? = nil
    public var hiddenAct: String = "silu"
    public var maxPositionEmbeddings: Int = 2048
    public var initializerRange: Double = 0.02
    public var rmsNormEps: Double = 1e-6
    public var ropeTheta: Double = 10000
    public var ropeScaling: RopeScaling = .none
    public var tieWordEmbeddings: Bool = false
    public var attentionBias: Bool = false
    public var mlpBias: Bool = false
    public var bosTokenId: Int? = 1
    public var eosTokenIds: [Int] = [2]
    public var padTokenId: Int? = nil

    public init() {}

    /// A config with the shape fields set and the rest at their defaults.
    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
                tieWordEmbeddings: Bool = false) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim
        self.tieWordEmbeddings = tieWordEmbeddings
    }

    /// The per-head width actually used.
    public var resolvedHeadDim: Int { headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0) }
    /// The config with derived values made explicit (`head_dim`), for comparing two configs that
    /// describe the same model (one may spell out what the other derives).
    public var normalized: LlamaConfig {
        var c = self
        c.headDim = resolvedHeadDim
        return c
    }

    /// Whether q/k/v projections carry biases (Llama's `attention_bias`, always for Qwen2).
    public var qkvBias: Bool { modelType == "qwen2" || attentionBias }
    /// Whether o_proj carries a bias (Llama's `attention_bias`; never for Qwen2).
    public var outputProjectionBias: Bool { modelType != "qwen2" && attentionBias }

    /// The largest value of each size field: products of up to three fit in 64 bits, and
    /// vocabulary ids and positions in int32.
    public static let dimensionLimits: [(name: String, limit: Int)] = [
        ("vocab_size", Int(Int32.max)), ("hidden_size", 1 << 20), ("intermediate_size", 1 << 24),
        ("num_hidden_layers", 1 << 20), ("num_attention_heads", 1 << 20), ("num_key_value_heads", 1 << 20),
        ("head_dim", 1 << 20), ("max_position_embeddings", Int(Int32.max)),
    ]

    /// Checks the config describes a model swift-dpo can build; the error names the field.
    public func validate() throws {
        func positive(_ v: Int, _ name: String) throws {
            if v <= 0 { throw DPOError.invalidArgument("config: \(name) must be > 0, got \(v)") }
        }
        guard modelType == "llama" || modelType == "qwen2" else {
            throw DPOError.invalidArgument("config: model_type '\(modelType)' is not supported (supported: llama, qwen2)")
        }
        // Each size is bounded first so no product below can overflow and nothing sized by one
        // size alone (the rotary tables by head_dim) can be large.
        let sizes = [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                     ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                     ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim ?? 1),
                     ("max_position_embeddings", maxPositionEmbeddings)]
        for (name, v) in sizes {
            if let limit = LlamaConfig.dimensionLimits.first(where: { $0.name == name })?.limit, v > limit {
                throw DPOError.invalidArgument("config: \(name) = \(v) is larger than the supported maximum \(limit)")
            }
        }
        try positive(vocabSize, "vocab_size")
        try positive(hiddenSize, "hidden_size")
        try positive(intermediateSize, "intermediate_size")
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(numKeyValueHeads, "num_key_value_heads")
        if vocabSize > Int(Int32.max) {
            throw DPOError.invalidArgument("config: vocab_size \(vocabSize) exceeds the int32 token range")
        }
        if let headDim { try positive(headDim, "head_dim") } else if hiddenSize % numAttentionHeads != 0 {
            throw DPOError.invalidArgument("config: hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads) and head_dim is not set")
        }
        if resolvedHeadDim % 2 != 0 {
            throw DPOError.invalidArgument("config: head_dim must be even for rotary embeddings, got \(resolvedHeadDim)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw DPOError.invalidArgument("config: num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        if hiddenAct != "silu" {
            throw DPOError.invalidArgument("config: hidden_act '\(hiddenAct)' is not supported (supported: silu)")
        }
        if !(rmsNormEps > 0) || !rmsNormEps.isFinite {
            throw DPOError.invalidArgument("config: rms_norm_eps must be a positive number, got \(rmsNormEps)")
        }
        if !(ropeTheta > 0) || !ropeTheta.isFinite {
            throw DPOError.invalidArgument("config: rope_theta must be a positive number, got \(ropeTheta)")
        }
        if !(initializerRange >= 0) || !initializerRange.isFinite {
            throw DPOError.invalidArgument("config: initializer_range must be >= 0, got \(initializerRange)")
        }
        try positive(maxPositionEmbeddings, "max_position_embeddings")
        if case .llama3(let factor, let low, let high, let original) = ropeScaling {
            // The llama3 rule computes in fp32 (as transformers): each factor must be a positive fp32.
            for (name, v) in [("factor", factor), ("low_freq_factor", low), ("high_freq_factor", high)] {
                if !(Float(v) > 0) || !Float(v).isFinite {
                    throw DPOError.invalidArgument("config: rope_scaling.\(name) must be a positive number within fp32 range, got \(v)")
                }
            }
            if !(high > low) || !(Float(high - low) > 0) {
                throw DPOError.invalidArgument("config: llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor, got \(low) and \(high)")
            }
            try positive(original, "rope_scaling.original_max_position_embeddings")
        }
        for (name, id) in [("bos_token_id", bosTokenId), ("pad_token_id", padTokenId)] + eosTokenIds.enumerated().map({
            (eosTokenIds.count == 1 ? "eos_token_id" : "eos_token_id[\($0.offset)]", $0.element)
        }) {
            if let id, id < 0 || id >= vocabSize {
                throw DPOError.invalidArgument("config: \(name) \(id) is outside the vocabulary [0, \(vocabSize))")
            }
        }
        // The widest matrices must be addressable with int32 BLAS dimensions.
        let widest = [Double(vocabSize) * Double(hiddenSize), Double(intermediateSize) * Double(hiddenSize),
                      Double(numAttentionHeads) * Double(resolvedHeadDim) * Double(hiddenSize)].max() ?? 0
        if widest > Double(Int32.max) {
            throw DPOError.invalidArgument("config: a weight matrix has \(widest) entries, more than 2^31 - 1")
        }
        try validateRotaryFrequencies()
    }

    /// The rotary inverse frequencies (fp32, as the model computes them) must be finite and > 0:
    /// theta^(-2i/d) underflows or overflows for extreme rope_theta (1e-300 gives 1/0 = inf,
    /// 1e300 gives 1/inf = 0), and the llama3 rule divides by `factor`.
    func validateRotaryFrequencies() throws {
        let d = resolvedHeadDim
        func bad(_ f: [Float]) -> Int? { f.firstIndex { !($0 > 0) || !$0.isFinite } }
        let plain = ropeInverseFrequencies(headDim: d, theta: ropeTheta, scaling: .none)
        if let i = bad(plain) {
            throw DPOError.invalidArgument("config: rope_theta \(ropeTheta) gives the rotary inverse frequency theta^(-\(2 * i)/\(d)) = \(plain[i]) in fp32; it must be finite and > 0")
        }
        if case .llama3(let factor, let low, let high, _) = ropeScaling,
           let i = bad(ropeInverseFrequencies(headDim: d, theta: ropeTheta, scaling: ropeScaling)) {
            throw DPOError.invalidArgument("config: rope_scaling (llama3, factor \(factor), low_freq_factor \(low), high_freq_factor \(high)) makes rotary inverse frequency \(i) non-finite or 0 in fp32")
        }
    }
}

// MARK: - config.json

extension LlamaConfig {
    /// Reads a Hugging Face `config.json` object. Accepts both RoPE spellings: top-level
    /// `rope_theta` + `rope_scaling` (transformers 4) and `rope_parameters` (transformers 5).
    public init(json: JSONValue) throws {
        guard let obj = json.object else { throw DPOError.format("config.json: top level is not a JSON object") }
        self.init()

        func int(_ key: String) throws -> Int? {
            guard let v = obj[key], !v.isNull else { return nil }
            guard let i = v.int else { throw DPOError.format("config.json: '\(key)' must be an integer, got \(JSON.serialize(v, pretty: false))") }
            return i
        }
        func double(_ key: String, in o: JSONObject? = nil) throws -> Double? {
            guard let v = (o ?? obj)[key], !v.isNull else { return nil }
            guard let d = v.double else { throw DPOError.format("config.json: '\(key)' must be a number, got \(JSON.serialize(v, pretty: false))") }
            return d
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = obj[key], !v.isNull else { return nil }
            guard let b = v.bool else { throw DPOError.format("config.json: '\(key)' must be true or false, got \(JSON.serialize(v, pretty: false))") }
            return b
        }
        func string(_ key: String) throws -> String? {
            guard let v = obj[key], !v.isNull else { return nil }
            guard let s = v.string else { throw DPOError.format("config.json: '\(key)' must be a string, got \(JSON.serialize(v, pretty: false))") }
            return s
        }

        if let v = try string("model_type") { modelType = v }
        if let v = try int("vocab_size") { vocabSize = v }
        if let v = try int("hidden_size") { hiddenSize = v }
        if let v = try int("intermediate_size") { intermediateSize = v }
        if let v = try int("num_hidden_layers") { numHiddenLayers = v }
        if let v = try int("num_attention_heads") { numAttentionHeads = v }
        numKeyValueHeads = try int("num_key_value_heads") ?? numAttentionHeads
        headDim = try int("head_dim")
        if let v = try string("hidden_act") { hiddenAct = v }
        if let v = try int("max_position_embeddings") { maxPositionEmbeddings = v }
        if let v = try double("initializer_range") { initializerRange = v }
        if let v = try double("rms_norm_eps") { rmsNormEps = v }
        if let v = try bool("tie_word_embeddings") { tieWordEmbeddings = v }
        if let v = try bool("attention_bias") { attentionBias = v }
        if let v = try bool("mlp_bias") { mlpBias = v }
        if modelType == "qwen2", let v = try bool("use_sliding_window"), v {
            throw DPOError.format("config.json: use_sliding_window=true is not supported")
        }
        // Absent ids keep transformers' defaults (bos 1, eos 2); an explicit null means none.
        if obj["bos_token_id"] != nil { bosTokenId = try int("bos_token_id") }
        padTokenId = try int("pad_token_id")
        if let v = obj["eos_token_id"], !v.isNull {
            if let i = v.int { eosTokenIds = [i] } else if let list = v.array {
                eosTokenIds = try list.map {
                    guard let i = $0.int else { throw DPOError.format("config.json: 'eos_token_id' entries must be integers") }
                    return i
                }
            } else { throw DPOError.format("config.json: 'eos_token_id' must be an integer or a list of integers") }
        } else if obj["eos_token_id"] != nil { eosTokenIds = [] }

        // RoPE: transformers 5 writes `rope_parameters`; older checkpoints a top-level `rope_theta`
        // and an optional `rope_scaling` object.
        var rope: JSONObject? = nil
        if let v = obj["rope_parameters"], !v.isNull {
            guard let o = v.object else { throw DPOError.format("config.json: 'rope_parameters' must be an object") }
            rope = o
        } else if let v = obj["rope_scaling"], !v.isNull {
            guard let o = v.object else { throw DPOError.format("config.json: 'rope_scaling' must be an object or null") }
            rope = o
        }
        if let theta = try double("rope_theta", in: rope) ?? double("rope_theta") { ropeTheta = theta }
        if let rope {
            let typeValue = rope["rope_type"] ?? rope["type"] ?? .string("default")
            guard let type = typeValue.string else {
                throw DPOError.format("config.json: 'rope_type' must be a string, got \(JSON.serialize(typeValue, pretty: false))")
            }
            switch type {
            case "default":
                ropeScaling = .none
            case "llama3":
                func need(_ k: String) throws -> Double {
                    guard let d = try double(k, in: rope) else {
                        throw DPOError.format("config.json: llama3 rope scaling is missing '\(k)'")
                    }
                    return d
                }
                let original = try need("original_max_position_embeddings")
                guard original >= 1 && original <= Double(1 << 31) && original == original.rounded() else {
                    throw DPOError.format("config.json: original_max_position_embeddings must be a positive integer, got \(original)")
                }
                ropeScaling = .llama3(factor: try need("factor"), lowFreqFactor: try need("low_freq_factor"),
                                      highFreqFactor: try need("high_freq_factor"),
                                      originalMaxPositionEmbeddings: Int(original))
            default:
                throw DPOError.format("config.json: rope type '\(type)' is not supported (supported: default, llama3)")
            }
        }
        do { try validate() } catch DPOError.invalidArgument(let m) { throw DPOError.format("config.json: " + m.dropFirst("config: ".count)) }
    }

    /// The config as Hugging Face writes it (transformers 5 spelling: `rope_parameters`), with
    /// `architectures` so `AutoModelForCausalLM` knows the class. Keys of `base` that swift-dpo does
    /// not model (e.g. from a loaded checkpoint) are kept.
    public func json(base: JSONObject = JSONObject()) -> JSONValue {
        var o = base
        func num(_ d: Double) -> JSONValue { .number(d) }
        func optInt(_ i: Int?) -> JSONValue { i.map { .number(Double($0)) } ?? .null }
        if o["architectures"] == nil {
            o["architectures"] = .array([.string(modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM")])
        }
        o["model_type"] = .string(modelType)
        o["vocab_size"] = num(Double(vocabSize))
        o["hidden_size"] = num(Double(hiddenSize))
        o["intermediate_size"] = num(Double(intermediateSize))
        o["num_hidden_layers"] = num(Double(numHiddenLayers))
        o["num_attention_heads"] = num(Double(numAttentionHeads))
        o["num_key_value_heads"] = num(Double(numKeyValueHeads))
        // head_dim only when set: transformers derives it otherwise, and a round trip keeps it unset.
        o["head_dim"] = headDim.map { num(Double($0)) }
        o["hidden_act"] = .string(hiddenAct)
        o["max_position_embeddings"] = num(Double(maxPositionEmbeddings))
        o["initializer_range"] = num(initializerRange)
        o["rms_norm_eps"] = num(rmsNormEps)
        o["tie_word_embeddings"] = .bool(tieWordEmbeddings)
        if modelType == "llama" { o["attention_bias"] = .bool(attentionBias) }
        o["mlp_bias"] = .bool(mlpBias)
        o["bos_token_id"] = optInt(bosTokenId)
        o["eos_token_id"] = eosTokenIds.count == 1 ? optInt(eosTokenIds[0])
            : .array(eosTokenIds.map { .number(Double($0)) })
        o["pad_token_id"] = optInt(padTokenId)
        var rope = JSONObject()
        rope["rope_theta"] = num(ropeTheta)
        switch ropeScaling {
        case .none:
            rope["rope_type"] = .string("default")
        case .llama3(let factor, let low, let high, let original):
            rope["rope_type"] = .string("llama3")
            rope["factor"] = num(factor)
            rope["low_freq_factor"] = num(low)
            rope["high_freq_factor"] = num(high)
            rope["original_max_position_embeddings"] = num(Double(original))
        }
        o["rope_scaling"] = nil
        o["rope_theta"] = nil
        o["rope_parameters"] = .object(rope)
        if o["torch_dtype"] != nil { o["torch_dtype"] = .string("float32") }
        o["dtype"] = .string("float32")
        return .object(o)
    }
}
