/// The DPO loss types of TRL 1.16 (`loss_type`), with TRL's names as raw values.
public enum DPOLossType: String, CaseIterable, Sendable {
    case sigmoid, hinge, ipo, sigmoidNorm = "sigmoid_norm", exoPair = "exo_pair", ncaPair = "nca_pair"
    case robust, bcoPair = "bco_pair", sppoHard = "sppo_hard", aot, aotUnpaired = "aot_unpaired"
    case apoZero = "apo_zero", apoDown = "apo_down", discopop, sft

    /// Parses a TRL loss name; the error lists the valid names.
    public init(name: String) throws {
        guard let t = DPOLossType(rawValue: name) else {
            throw DPOError.invalidArgument("loss_type: unknown loss '\(name)' (valid: \(DPOLossType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self = t
    }
}

/// `f_divergence_type`: how a log-ratio becomes a score (see dpo-math.md).
public enum FDivergenceType: String, CaseIterable, Sendable {
    case reverseKL = "reverse_kl", forwardKL = "forward_kl", jsDivergence = "js_divergence"
    case alphaDivergence = "alpha_divergence"

    public init(name: String) throws {
        guard let t = FDivergenceType(rawValue: name) else {
            throw DPOError.invalidArgument("f_divergence_type: unknown value '\(name)' (valid: \(FDivergenceType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self = t
    }
}

/// `lr_scheduler_type`, as transformers names them.
public enum LRSchedulerType: String, CaseIterable, Sendable {
    case constant, linear, cosine, constantWithWarmup = "constant_with_warmup"

    public init(name: String) throws {
        guard let t = LRSchedulerType(rawValue: name) else {
            throw DPOError.invalidArgument("lr_scheduler_type: unknown value '\(name)' (valid: \(LRSchedulerType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self = t
    }
}

/// `truncation_mode`: which end of a too-long sequence is kept.
public enum TruncationMode: String, CaseIterable, Sendable {
    case keepStart = "keep_start", keepEnd = "keep_end"

    public init(name: String) throws {
        guard let t = TruncationMode(rawValue: name) else {
            throw DPOError.invalidArgument("truncation_mode: unknown value '\(name)' (valid: keep_start, keep_end)")
        }
        self = t
    }
}

/// The optimizer and schedule settings shared by DPO and SFT, with transformers' `TrainingArguments`
/// names (as properties in Swift case: `learning_rate` is `learningRate`) and TRL's defaults.
public struct OptimizerConfig: Equatable, Sendable {
    /// `learning_rate` (TRL's DPO default 1e-6).
    public var learningRate: Double = 1e-6
    /// `weight_decay`: applied to every tensor except biases and norm weights, as transformers does.
    public var weightDecay: Double = 0
    public var adamBeta1: Double = 0.9
    public var adamBeta2: Double = 0.999
    public var adamEpsilon: Double = 1e-8
    /// `max_grad_norm`: clip the global L2 norm of the gradient to this (0 disables clipping).
    public var maxGradNorm: Double = 1.0
    public var lrSchedulerType: LRSchedulerType = .linear
    /// `warmup_steps`: linear warmup from 0 over this many optimizer steps (wins over the ratio when > 0).
    public var warmupSteps: Int = 0
    /// `warmup_ratio`: warmup as a fraction of `max_steps` (ceil), used when `warmup_steps` is 0.
    public var warmupRatio: Double = 0
    /// `max_steps`: the schedule's length in optimizer steps (linear and cosine decay to 0 there).
    public var maxSteps: Int = 1000
    /// `gradient_accumulation_steps`: micro-batches per optimizer step.
    public var gradientAccumulationSteps: Int = 1
    public var seed: UInt64 = 42

    public init() {}

    func validate() throws {
        func check(_ ok: Bool, _ field: String, _ value: Any, _ rule: String) throws {
            if !ok { throw DPOError.invalidArgument("\(field) must be \(rule), got \(value)") }
        }
        try check(learningRate >= 0 && learningRate.isFinite, "learning_rate", learningRate, ">= 0")
        try check(weightDecay >= 0 && weightDecay.isFinite, "weight_decay", weightDecay, ">= 0")
        try check(adamBeta1 >= 0 && adamBeta1 < 1, "adam_beta1", adamBeta1, "in [0, 1)")
        try check(adamBeta2 >= 0 && adamBeta2 < 1, "adam_beta2", adamBeta2, "in [0, 1)")
        try check(adamEpsilon > 0 && adamEpsilon.isFinite, "adam_epsilon", adamEpsilon, "> 0")
        try check(maxGradNorm >= 0 && maxGradNorm.isFinite, "max_grad_norm", maxGradNorm, ">= 0")
        try check(warmupSteps >= 0, "warmup_steps", warmupSteps, ">= 0")
        try check(warmupRatio >= 0 && warmupRatio <= 1, "warmup_ratio", warmupRatio, "in [0, 1]")
        try check(maxSteps >= 1 && maxSteps <= 1 << 40, "max_steps", maxSteps, "in [1, 2^40]")
        try check(warmupSteps <= 1 << 40, "warmup_steps", warmupSteps, "<= 2^40")
        try check(gradientAccumulationSteps >= 1 && gradientAccumulationSteps <= 1 << 30, "gradient_accumulation_steps", gradientAccumulationSteps, "in [1, 2^30]")
    }
}

/// TRL's `DPOConfig`: the same fields and defaults (Swift-cased), validated as TRL validates them
/// plus the combinations TRL would only fail on later.
public struct DPOConfig: Equatable, Sendable {
    /// `beta`: the KL-regularisation strength (temperature of the implicit reward).
    public var beta: Double = 0.1
    /// `loss_type`: one or more losses, summed with `loss_weights`.
    public var lossType: [DPOLossType] = [.sigmoid]
    /// `loss_weights`: one weight per loss type (nil = all 1).
    public var lossWeights: [Double]? = nil
    /// `label_smoothing` (eps): cDPO / robust / EXO / AOT smoothing.
    public var labelSmoothing: Double = 0
    public var fDivergenceType: FDivergenceType = .reverseKL
    public var fAlphaDivergenceCoef: Double = 0.5
    /// `ld_alpha`: LD-DPO weight of completion tokens past the shorter completion's length.
    public var ldAlpha: Double? = nil
    /// `use_weighting`: WPO weights.
    public var useWeighting: Bool = false
    public var discopopTau: Double = 0.05
    /// `max_length`: longest prompt+completion sequence (nil = no limit).
    public var maxLength: Int? = 1024
    public var truncationMode: TruncationMode = .keepStart
    /// `precompute_ref_log_probs`: the reference log-probs come with each batch (see
    /// `DPOTrainer.precomputeReferenceLogProbs`) and no reference model is held.
    public var precomputeRefLogProbs: Bool = false
    /// `sync_ref_model` (TR-DPO): every `ref_model_sync_steps` optimizer steps,
    /// ref <- (1 - alpha) ref + alpha policy with alpha = `ref_model_mixup_alpha`.
    public var syncRefModel: Bool = false
    public var refModelMixupAlpha: Double = 0.6
    public var refModelSyncSteps: Int = 512
    /// `bf16` (transformers' TrainingArguments): bf16 mixed precision, as PyTorch's CPU autocast to
    /// bfloat16 does it: the matrix products of the policy's and the reference's forward and backward
    /// take bf16-rounded inputs and accumulate in fp32 (`LlamaModel.bf16`, which the trainer sets on
    /// both models); weights, gradients, AdamW, norms, softmax, log-probs and the loss stay fp32.
    /// Default false (exact fp32), where TRL 1.16 defaults to true when fp16 is unset.
    public var bf16: Bool = false
    /// Optimizer, schedule, accumulation and seed.
    public var optimizer = OptimizerConfig()

    public init() {}

    /// The most entries `loss_type` (and so `loss_weights`) may have.
    public static let maxLossTypes = 64

    /// The weight of each loss in `lossType`.
    public var resolvedLossWeights: [Double] { lossWeights ?? [Double](repeating: 1, count: lossType.count) }

    /// Refuses invalid values and combinations with a message naming the field.
    public func validate() throws {
        try optimizer.validate()
        if !(beta > 0) || !beta.isFinite { throw DPOError.invalidArgument("beta must be > 0, got \(beta)") }
        if lossType.isEmpty { throw DPOError.invalidArgument("loss_type must name at least one loss") }
        if lossType.count > DPOConfig.maxLossTypes {
            throw DPOError.invalidArgument("loss_type names \(lossType.count) losses; at most \(DPOConfig.maxLossTypes) (as many as loss_weights may have)")
        }
        if let w = lossWeights {
            if w.count != lossType.count {
                throw DPOError.invalidArgument("loss_weights has \(w.count) weights for \(lossType.count) loss types")
            }
            if let bad = w.first(where: { !$0.isFinite }) { throw DPOError.invalidArgument("loss_weights: weight \(bad) is not finite") }
        }
        if !(labelSmoothing >= 0 && labelSmoothing < 1) {
            throw DPOError.invalidArgument("label_smoothing must be in [0, 1), got \(labelSmoothing)")
        }
        if lossType.contains(.exoPair) && labelSmoothing == 0 {
            throw DPOError.invalidArgument("label_smoothing must be > 0 with loss_type exo_pair (the EXO paper recommends 1e-3), got 0")
        }
        if lossType.contains(.robust) && !(labelSmoothing < 0.5) {
            throw DPOError.invalidArgument("label_smoothing must be in [0, 0.5) with loss_type robust, got \(labelSmoothing)")
        }
        let fDivergenceLosses: Set<DPOLossType> = [.sigmoid, .sigmoidNorm, .hinge, .ipo, .exoPair, .robust, .discopop, .sft]
        if fDivergenceType != .reverseKL, let bad = lossType.first(where: { !fDivergenceLosses.contains($0) }) {
            throw DPOError.invalidArgument("f_divergence_type \(fDivergenceType.rawValue) is only valid with loss types sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, discopop, sft; got \(bad.rawValue)")
        }
        if !fAlphaDivergenceCoef.isFinite { throw DPOError.invalidArgument("f_alpha_divergence_coef must be finite") }
        if useWeighting, let bad = lossType.first(where: { $0 == .aot || $0 == .aotUnpaired }) {
            throw DPOError.invalidArgument("use_weighting is not supported with loss_type \(bad.rawValue) (it sorts pairs, which misaligns the weights)")
        }
        if let a = ldAlpha, !(a >= 0 && a <= 1) { throw DPOError.invalidArgument("ld_alpha must be in [0, 1], got \(a)") }
        if !(discopopTau > 0) || !discopopTau.isFinite { throw DPOError.invalidArgument("discopop_tau must be > 0, got \(discopopTau)") }
        if let m = maxLength, m < 2 { throw DPOError.invalidArgument("max_length must be >= 2 or unset, got \(m)") }
        if syncRefModel {
            if precomputeRefLogProbs {
                throw DPOError.invalidArgument("sync_ref_model cannot be combined with precompute_ref_log_probs (precomputed log-probs would go stale)")
            }
            if !(refModelMixupAlpha >= 0 && refModelMixupAlpha <= 1) {
                throw DPOError.invalidArgument("ref_model_mixup_alpha must be in [0, 1], got \(refModelMixupAlpha)")
            }
            if refModelSyncSteps < 1 { throw DPOError.invalidArgument("ref_model_sync_steps must be >= 1, got \(refModelSyncSteps)") }
        }
    }
}
