/// The metrics of a DPO step or evaluation, with TRL's names and definitions (dpo-math.md,
/// "Metrics"). Over an optimizer step with gradient accumulation, each is the mean over the
/// micro-batches, as TRL logs them.
public struct DPOMetrics: Equatable, Sendable {
    public var loss = 0.0
    public var rewardsChosen = 0.0, rewardsRejected = 0.0, rewardsAccuracies = 0.0, rewardsMargins = 0.0
    public var logpsChosen = 0.0, logpsRejected = 0.0
    public var logitsChosen = 0.0, logitsRejected = 0.0
    public var entropy = 0.0
    public var meanTokenAccuracy = 0.0
    /// Global gradient L2 norm before clipping (optimizer steps only).
    public var gradNorm: Double? = nil
    /// Learning rate the optimizer step used (optimizer steps only).
    public var learningRate: Double? = nil
    /// Cumulative non-pad tokens of chosen and rejected rows seen in training.
    public var numTokens = 0.0

    public init() {}

    /// TRL's metric names and values, in TRL's logging order. `prefix` is "" or "eval_".
    public func named(prefix: String = "") -> [(name: String, value: Double)] {
        var out: [(String, Double)] = [
            ("loss", loss),
            ("rewards/chosen", rewardsChosen), ("rewards/rejected", rewardsRejected),
            ("rewards/accuracies", rewardsAccuracies), ("rewards/margins", rewardsMargins),
            ("logps/chosen", logpsChosen), ("logps/rejected", logpsRejected),
            ("logits/chosen", logitsChosen), ("logits/rejected", logitsRejected),
            ("entropy", entropy), ("mean_token_accuracy", meanTokenAccuracy),
        ]
        if let gradNorm { out.append(("grad_norm", gradNorm)) }
        if let learningRate { out.append(("learning_rate", learningRate)) }
        if prefix.isEmpty { out.append(("num_tokens", numTokens)) }
        return out.map { (prefix + $0.0, $0.1) }
    }

    /// Element-wise mean of micro-batch metrics (fields without a value stay nil).
    static func mean(_ all: [DPOMetrics]) -> DPOMetrics {
        if all.isEmpty { return DPOMetrics() }
        var m = DPOMetrics()
        let k = Double(all.count)
        func avg(_ f: (DPOMetrics) -> Double) -> Double { all.reduce(0) { $0 + f($1) } / k }
        m.loss = avg(\.loss)
        m.rewardsChosen = avg(\.rewardsChosen); m.rewardsRejected = avg(\.rewardsRejected)
        m.rewardsAccuracies = avg(\.rewardsAccuracies); m.rewardsMargins = avg(\.rewardsMargins)
        m.logpsChosen = avg(\.logpsChosen); m.logpsRejected = avg(\.logpsRejected)
        m.logitsChosen = avg(\.logitsChosen); m.logitsRejected = avg(\.logitsRejected)
        m.entropy = avg(\.entropy); m.meanTokenAccuracy = avg(\.meanTokenAccuracy)
        m.numTokens = all[all.count - 1].numTokens
        return m
    }

    /// Metrics of one forward: the loss plus the reward and model statistics of the batch.
    init(loss: Double, beta: Double, policy p: PairStatistics, refChosen: [Double], refRejected: [Double]) {
        self.init()
        let n = Double(p.chosen.count)
        self.loss = loss
        var acc = 0.0
        for i in 0..<p.chosen.count {
            // Rewards use the reverse-KL log-ratios whatever the loss type.
            let rc = beta * (p.chosen[i] - refChosen[i]), rr = beta * (p.rejected[i] - refRejected[i])
            rewardsChosen += rc / n; rewardsRejected += rr / n; rewardsMargins += (rc - rr) / n
            if rc > rr { acc += 1 }
            logpsChosen += p.chosen[i] / n; logpsRejected += p.rejected[i] / n
        }
        rewardsAccuracies = acc / n
        let ct = Double(max(p.chosenTokenCount, 1)), rt = Double(max(p.rejectedTokenCount, 1))
        logitsChosen = p.chosenMeanLogitSum / ct
        logitsRejected = p.rejectedMeanLogitSum / rt
        entropy = p.entropySum / (ct + rt)
        meanTokenAccuracy = p.chosenArgmaxHits / ct
    }
}
