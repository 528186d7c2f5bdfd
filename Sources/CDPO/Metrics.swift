import CDPOHeader
import DPO

// Engine metrics -> the C metrics structs (NaN where TRL logs nothing: grad_norm and
// learning_rate outside optimizer steps).

func metricsStruct(_ m: DPOMetrics, stepped: Bool, globalStep: Int) -> dpo_metrics {
    var s = dpo_metrics()
    s.struct_size = MemoryLayout<dpo_metrics>.size
    s.loss = m.loss
    s.rewards_chosen = m.rewardsChosen
    s.rewards_rejected = m.rewardsRejected
    s.rewards_accuracies = m.rewardsAccuracies
    s.rewards_margins = m.rewardsMargins
    s.logps_chosen = m.logpsChosen
    s.logps_rejected = m.logpsRejected
    s.logits_chosen = m.logitsChosen
    s.logits_rejected = m.logitsRejected
    s.entropy = m.entropy
    s.mean_token_accuracy = m.meanTokenAccuracy
    s.grad_norm = m.gradNorm ?? .nan
    s.learning_rate = m.learningRate ?? .nan
    s.num_tokens = m.numTokens
    s.optimizer_stepped = stepped ? 1 : 0
    s.global_step = Int64(globalStep)
    return s
}

func sftMetricsStruct(_ m: SFTMetrics, stepped: Bool, globalStep: Int) -> dpo_sft_metrics {
    var s = dpo_sft_metrics()
    s.struct_size = MemoryLayout<dpo_sft_metrics>.size
    s.loss = m.loss
    s.mean_token_accuracy = m.meanTokenAccuracy
    s.entropy = m.entropy
    s.grad_norm = m.gradNorm ?? .nan
    s.learning_rate = m.learningRate ?? .nan
    s.num_tokens = m.numTokens
    s.optimizer_stepped = stepped ? 1 : 0
    s.global_step = Int64(globalStep)
    return s
}

/// An optional output struct: NULL is allowed (the metrics are discarded).
func optionalOutput<T>(_ p: UnsafeMutablePointer<T>?, _ argument: String) throws -> UnsafeMutablePointer<T>? {
    try p.map { try outputStruct($0, argument) }
}
