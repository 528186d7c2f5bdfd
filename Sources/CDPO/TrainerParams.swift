import CDPOHeader
import DPO

// DPOConfig from the C params struct and from a JSON object of TRL-named fields, and the pieces
// SFTConfig shares (optimizer fields, max_length, the JSON reader).

/// Integer fields whose size is bounded (`maxCount`) before the engine computes with them.
let countFieldNames: Set<String> = ["warmup_steps", "max_steps", "gradient_accumulation_steps",
                                    "ref_model_sync_steps", "max_length", "per_device_train_batch_size",
                                    "per_device_eval_batch_size", "logging_steps", "eval_steps", "save_steps",
                                    "save_total_limit"]

/// A JSON object of config fields supplied by the host (NULL or empty text = no fields).
func readFieldsJSON(_ text: UnsafePointer<CChar>?, _ argument: String) throws -> JSONObject {
    guard let text else { return JSONObject() }
    let value: JSONValue
    do { value = try JSON.parse(String(cString: text)) } catch let e as DPOError {
        throw APIError.invalid("\(argument) is not valid JSON: \(e.message)")
    }
    guard let object = value.object else { throw APIError.invalid("\(argument) is not a JSON object") }
    for key in object.keys where countFieldNames.contains(key) {
        if let d = object[key]?.double, abs(d) > Double(maxCount) {
            throw APIError.invalid("\(key) = \(d) is out of range (at most \(maxCount))")
        }
    }
    return object
}

/// The optimizer fields of a params struct (identical in both structs).
func optimizerConfig(learningRate: Double, weightDecay: Double, beta1: Double, beta2: Double, epsilon: Double,
                     maxGradNorm: Double, scheduler: UnsafePointer<CChar>?, warmupSteps: Int64, warmupRatio: Double,
                     maxSteps: Int64, accumulation: Int64, seed: UInt64, base: OptimizerConfig) throws -> OptimizerConfig {
    var o = base
    o.learningRate = try finite(learningRate, "params->learning_rate")
    o.weightDecay = try finite(weightDecay, "params->weight_decay")
    o.adamBeta1 = try finite(beta1, "params->adam_beta1")
    o.adamBeta2 = try finite(beta2, "params->adam_beta2")
    o.adamEpsilon = try finite(epsilon, "params->adam_epsilon")
    o.maxGradNorm = try finite(maxGradNorm, "params->max_grad_norm")
    if let s = optionalString(scheduler) { o.lrSchedulerType = try LRSchedulerType(name: s) }
    o.warmupSteps = try checkedInt(warmupSteps, "params->warmup_steps", 0...maxCount)
    o.warmupRatio = try finite(warmupRatio, "params->warmup_ratio")
    o.maxSteps = try checkedInt(maxSteps, "params->max_steps", 1...maxCount)
    o.gradientAccumulationSteps = try checkedInt(accumulation, "params->gradient_accumulation_steps", 1...maxCount)
    o.seed = seed
    return o
}

/// `max_length` of a params struct: 0 = None.
func maxLengthField(_ v: Int64) throws -> Int? {
    if v == 0 { return nil }
    if v < 2 || v > maxCount { throw APIError.invalid("params->max_length = \(v) must be in [2, \(maxCount)], or 0 for None") }
    return Int(v)
}

extension DPOConfig {
    init(_ p: dpo_trainer_params) throws {
        self.init()
        beta = try finite(p.beta, "params->beta")
        if let s = optionalString(p.loss_type) {
            let names = s.split(separator: ",", omittingEmptySubsequences: false).map {
                String($0.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
            }
            if names.count > DPOConfig.maxLossTypes {
                throw APIError.invalid("params->loss_type names \(names.count) losses; at most \(DPOConfig.maxLossTypes)")
            }
            if names.contains("") { throw APIError.invalid("params->loss_type = '\(s)' has an empty name (use e.g. \"sigmoid\" or \"sigmoid,sft\")") }
            lossType = try names.map { try DPOLossType(name: $0) }
        }
        if p.loss_weights == nil {
            if p.num_loss_weights != 0 { throw APIError.invalid("params->loss_weights is NULL but num_loss_weights = \(p.num_loss_weights)") }
            lossWeights = nil
        } else {
            let n = try checkedInt(p.num_loss_weights, "params->num_loss_weights", 1...Int64(DPOConfig.maxLossTypes))
            let w = try required(p.loss_weights, "params->loss_weights")
            lossWeights = try (0..<n).map { try finite(w[$0], "params->loss_weights[\($0)]") }
        }
        labelSmoothing = try finite(p.label_smoothing, "params->label_smoothing")
        if let s = optionalString(p.f_divergence_type) { fDivergenceType = try FDivergenceType(name: s) }
        fAlphaDivergenceCoef = try finite(p.f_alpha_divergence_coef, "params->f_alpha_divergence_coef")
        if p.ld_alpha.isNaN { throw APIError.invalid("params->ld_alpha is NaN (use a negative value for None)") }
        ldAlpha = p.ld_alpha < 0 ? nil : p.ld_alpha
        useWeighting = try readFlag(p.use_weighting, "params->use_weighting")
        precomputeRefLogProbs = try readFlag(p.precompute_ref_log_probs, "params->precompute_ref_log_probs")
        discopopTau = try finite(p.discopop_tau, "params->discopop_tau")
        maxLength = try maxLengthField(p.max_length)
        if let s = optionalString(p.truncation_mode) { truncationMode = try TruncationMode(name: s) }
        syncRefModel = try readFlag(p.sync_ref_model, "params->sync_ref_model")
        if p.reserved != 0 { throw APIError.invalid("params->reserved = \(p.reserved) must be 0") }
        refModelMixupAlpha = try finite(p.ref_model_mixup_alpha, "params->ref_model_mixup_alpha")
        refModelSyncSteps = try checkedInt(p.ref_model_sync_steps, "params->ref_model_sync_steps", 1...maxCount)
        optimizer = try optimizerConfig(
            learningRate: p.learning_rate, weightDecay: p.weight_decay, beta1: p.adam_beta1, beta2: p.adam_beta2,
            epsilon: p.adam_epsilon, maxGradNorm: p.max_grad_norm, scheduler: p.lr_scheduler_type,
            warmupSteps: p.warmup_steps, warmupRatio: p.warmup_ratio, maxSteps: p.max_steps,
            accumulation: p.gradient_accumulation_steps, seed: p.seed, base: optimizer)
        try validate()
    }

    /// The params struct of this config (names point to static strings; loss weights, which the
    /// defaults do not have, are not represented).
    var cStruct: dpo_trainer_params {
        var p = dpo_trainer_params()
        p.struct_size = MemoryLayout<dpo_trainer_params>.size
        p.beta = beta
        p.loss_type = StaticCString.get(lossType.map(\.rawValue).joined(separator: ","))
        p.loss_weights = nil
        p.num_loss_weights = 0
        p.label_smoothing = labelSmoothing
        p.f_divergence_type = StaticCString.get(fDivergenceType.rawValue)
        p.f_alpha_divergence_coef = fAlphaDivergenceCoef
        p.ld_alpha = ldAlpha ?? -1
        p.use_weighting = useWeighting ? 1 : 0
        p.precompute_ref_log_probs = precomputeRefLogProbs ? 1 : 0
        p.discopop_tau = discopopTau
        p.max_length = Int64(maxLength ?? 0)
        p.truncation_mode = StaticCString.get(truncationMode.rawValue)
        p.sync_ref_model = syncRefModel ? 1 : 0
        p.ref_model_mixup_alpha = refModelMixupAlpha
        p.ref_model_sync_steps = Int64(refModelSyncSteps)
        optimizer.write(into: &p)
        return p
    }
}

/// The optimizer fields that dpo_trainer_params and dpo_sft_params share (same names and types).
protocol OptimizerParamsStruct {
    var learning_rate: Double { get set }
    var weight_decay: Double { get set }
    var adam_beta1: Double { get set }
    var adam_beta2: Double { get set }
    var adam_epsilon: Double { get set }
    var max_grad_norm: Double { get set }
    var lr_scheduler_type: UnsafePointer<CChar>! { get set }
    var warmup_steps: Int64 { get set }
    var warmup_ratio: Double { get set }
    var max_steps: Int64 { get set }
    var gradient_accumulation_steps: Int64 { get set }
    var seed: UInt64 { get set }
}

extension dpo_trainer_params: OptimizerParamsStruct {}
extension dpo_sft_params: OptimizerParamsStruct {}

extension OptimizerConfig {
    /// Copies the optimizer settings into either params struct.
    func write<P: OptimizerParamsStruct>(into p: inout P) {
        p.learning_rate = learningRate
        p.weight_decay = weightDecay
        p.adam_beta1 = adamBeta1
        p.adam_beta2 = adamBeta2
        p.adam_epsilon = adamEpsilon
        p.max_grad_norm = maxGradNorm
        p.lr_scheduler_type = StaticCString.get(lrSchedulerType.rawValue)
        p.warmup_steps = Int64(warmupSteps)
        p.warmup_ratio = warmupRatio
        p.max_steps = Int64(maxSteps)
        p.gradient_accumulation_steps = Int64(gradientAccumulationSteps)
        p.seed = seed
    }
}
