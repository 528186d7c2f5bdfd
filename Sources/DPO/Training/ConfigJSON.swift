/// DPOConfig / OptimizerConfig as JSON objects keyed by TRL's field names, used by checkpoints, the
/// command line and the bindings. Unknown keys and wrong types are refused with the key's name.
extension OptimizerConfig {
    static let fieldNames = ["learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                             "max_grad_norm", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_steps",
                             "gradient_accumulation_steps", "seed"]

    public func write(into o: inout JSONObject) {
        o["learning_rate"] = .number(learningRate)
        o["weight_decay"] = .number(weightDecay)
        o["adam_beta1"] = .number(adamBeta1)
        o["adam_beta2"] = .number(adamBeta2)
        o["adam_epsilon"] = .number(adamEpsilon)
        o["max_grad_norm"] = .number(maxGradNorm)
        o["lr_scheduler_type"] = .string(lrSchedulerType.rawValue)
        o["warmup_steps"] = .number(Double(warmupSteps))
        o["warmup_ratio"] = .number(warmupRatio)
        o["max_steps"] = .number(Double(maxSteps))
        o["gradient_accumulation_steps"] = .number(Double(gradientAccumulationSteps))
        o["seed"] = .number(Double(seed))
    }

    /// Sets one field from JSON; returns false if the key is not an optimizer field.
    mutating func set(_ key: String, _ v: JSONValue) throws -> Bool {
        switch key {
        case "learning_rate": learningRate = try v.requireDouble(key)
        case "weight_decay": weightDecay = try v.requireDouble(key)
        case "adam_beta1": adamBeta1 = try v.requireDouble(key)
        case "adam_beta2": adamBeta2 = try v.requireDouble(key)
        case "adam_epsilon": adamEpsilon = try v.requireDouble(key)
        case "max_grad_norm": maxGradNorm = try v.requireDouble(key)
        case "lr_scheduler_type": lrSchedulerType = try LRSchedulerType(name: try v.requireString(key))
        case "warmup_steps": warmupSteps = try v.requireInt(key)
        case "warmup_ratio": warmupRatio = try v.requireDouble(key)
        case "max_steps": maxSteps = try v.requireInt(key)
        case "gradient_accumulation_steps": gradientAccumulationSteps = try v.requireInt(key)
        case "seed":
            let s = try v.requireInt(key)
            if s < 0 { throw DPOError.invalidArgument("seed must be >= 0, got \(s)") }
            seed = UInt64(s)
        default: return false
        }
        return true
    }
}

extension DPOConfig {
    /// TRL's names of the fields (`jsonObject`'s keys).
    public static let fieldNames: Set<String> = Set(DPOConfig().jsonObject.keys)

    /// Every field, TRL names.
    public var jsonObject: JSONObject {
        var o = JSONObject()
        o["beta"] = .number(beta)
        o["loss_type"] = .array(lossType.map { .string($0.rawValue) })
        o["loss_weights"] = lossWeights.map { .array($0.map { .number($0) }) } ?? .null
        o["label_smoothing"] = .number(labelSmoothing)
        o["f_divergence_type"] = .string(fDivergenceType.rawValue)
        o["f_alpha_divergence_coef"] = .number(fAlphaDivergenceCoef)
        o["ld_alpha"] = ldAlpha.map { .number($0) } ?? .null
        o["use_weighting"] = .bool(useWeighting)
        o["discopop_tau"] = .number(discopopTau)
        o["max_length"] = maxLength.map { .number(Double($0)) } ?? .null
        o["truncation_mode"] = .string(truncationMode.rawValue)
        o["precompute_ref_log_probs"] = .bool(precomputeRefLogProbs)
        o["sync_ref_model"] = .bool(syncRefModel)
        o["ref_model_mixup_alpha"] = .number(refModelMixupAlpha)
        o["ref_model_sync_steps"] = .number(Double(refModelSyncSteps))
        o["bf16"] = .bool(bf16)
        optimizer.write(into: &o)
        return o
    }

    /// Sets one field by its TRL name (`loss_type` accepts a name or a list of names).
    public mutating func set(_ key: String, _ v: JSONValue) throws {
        switch key {
        case "beta": beta = try v.requireDouble(key)
        case "loss_type":
            if let s = v.string { lossType = [try DPOLossType(name: s)] } else if let a = v.array {
                lossType = try a.map { try DPOLossType(name: try $0.requireString(key)) }
            } else { throw DPOError.invalidArgument("loss_type must be a string or a list of strings") }
        case "loss_weights":
            if v.isNull { lossWeights = nil } else if let a = v.array {
                lossWeights = try a.map { try $0.requireDouble(key) }
            } else { throw DPOError.invalidArgument("loss_weights must be a list of numbers or null") }
        case "label_smoothing": labelSmoothing = try v.requireDouble(key)
        case "f_divergence_type": fDivergenceType = try FDivergenceType(name: try v.requireString(key))
        case "f_alpha_divergence_coef": fAlphaDivergenceCoef = try v.requireDouble(key)
        case "ld_alpha": ldAlpha = v.isNull ? nil : try v.requireDouble(key)
        case "use_weighting": useWeighting = try v.requireBool(key)
        case "discopop_tau": discopopTau = try v.requireDouble(key)
        case "max_length": maxLength = v.isNull ? nil : try v.requireInt(key)
        case "truncation_mode": truncationMode = try TruncationMode(name: try v.requireString(key))
        case "precompute_ref_log_probs": precomputeRefLogProbs = try v.requireBool(key)
        case "sync_ref_model": syncRefModel = try v.requireBool(key)
        case "ref_model_mixup_alpha": refModelMixupAlpha = try v.requireDouble(key)
        case "ref_model_sync_steps": refModelSyncSteps = try v.requireInt(key)
        case "bf16": bf16 = try v.requireBool(key)
        default:
            if try !optimizer.set(key, v) { throw DPOError.invalidArgument("unknown DPOConfig field '\(key)'") }
        }
    }

    /// A config from a JSON object of TRL-named fields (absent fields keep their defaults), validated.
    public init(json: JSONObject) throws {
        self.init()
        for key in json.keys { try set(key, json[key]!) }
        try validate()
    }
}

extension JSONValue {
    func requireDouble(_ key: String) throws -> Double {
        guard let d = double, d.isFinite else { throw DPOError.invalidArgument("\(key) must be a number, got \(JSON.serialize(self, pretty: false))") }
        return d
    }
    func requireInt(_ key: String) throws -> Int {
        guard let i = int else { throw DPOError.invalidArgument("\(key) must be an integer, got \(JSON.serialize(self, pretty: false))") }
        return i
    }
    func requireBool(_ key: String) throws -> Bool {
        guard let b = bool else { throw DPOError.invalidArgument("\(key) must be true or false, got \(JSON.serialize(self, pretty: false))") }
        return b
    }
    func requireString(_ key: String) throws -> String {
        guard let s = string else { throw DPOError.invalidArgument("\(key) must be a string, got \(JSON.serialize(self, pretty: false))") }
        return s
    }
}
