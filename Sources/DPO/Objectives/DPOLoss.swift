#if canImport(Glibc)
import Glibc
#endif

// The DPO loss family on per-sequence sums (TRL 1.16 `DPOTrainer._compute_loss`, dpo-math.md):
// per-sequence log-prob sums in, the loss and d loss / d (policy sums) out. Computed in Double.

/// Per-pair inputs of the loss. All arrays have one entry per pair.
public struct DPOLossInput {
    /// Policy and reference completion log-prob sums (LD-weighted when `ld_alpha` is set).
    public var policyChosen: [Double], policyRejected: [Double]
    public var refChosen: [Double], refRejected: [Double]
    /// Completion token counts used by ipo and sigmoid_norm (TRL: `completion_mask.sum`, >= 1).
    public var chosenTokens: [Double], rejectedTokens: [Double]
    /// WPO weight product w_c * w_r per pair (no gradient), or nil.
    public var pairWeights: [Double]?
    /// For the `sft` loss: the sum of the chosen completions' per-token log-probs over the batch
    /// and the number of those tokens.
    public var chosenTokenLogpSum: Double = 0
    public var chosenTokenCount: Int = 0

    public init(policyChosen: [Double], policyRejected: [Double], refChosen: [Double], refRejected: [Double],
                chosenTokens: [Double], rejectedTokens: [Double], pairWeights: [Double]? = nil,
                chosenTokenLogpSum: Double = 0, chosenTokenCount: Int = 0) {
        self.policyChosen = policyChosen; self.policyRejected = policyRejected
        self.refChosen = refChosen; self.refRejected = refRejected
        self.chosenTokens = chosenTokens; self.rejectedTokens = rejectedTokens
        self.pairWeights = pairWeights
        self.chosenTokenLogpSum = chosenTokenLogpSum; self.chosenTokenCount = chosenTokenCount
    }

    public var pairs: Int { policyChosen.count }
}

/// The loss and its gradient with respect to the policy inputs.
public struct DPOLossOutput {
    public var loss: Double
    /// d loss / d policyChosen[i] and d loss / d policyRejected[i].
    public var dChosen: [Double], dRejected: [Double]
    /// d loss / d (each chosen completion token's log-prob) from the `sft` term (same for all).
    public var dChosenToken: Double
}

@inline(__always) func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }
@inline(__always) func sigmoidD(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

/// Score s(r) of a log-ratio and its derivative ds/dr for the f-divergence (dpo-math.md).
@inline(__always)
func fDivergenceScore(_ r: Double, _ type: FDivergenceType, alpha: Double) -> (s: Double, ds: Double) {
    switch type {
    case .reverseKL:
        return (r, 1)
    case .forwardKL:  // s = 1 - exp(-r)
        let e = exp(-r)
        return (1 - e, e)
    case .jsDivergence:  // s = log 2 + log sigmoid(r)
        return (log(2) + logSigmoid(r), sigmoidD(-r))
    case .alphaDivergence:  // s = (exp(min((a-1) r, 80)) - 1) / (a-1)
        if abs(alpha - 1) < 1e-6 { return (r, 1) }
        let t = (alpha - 1) * r
        if t > 80 { return ((exp(80) - 1) / (alpha - 1), 0) }  // clamped: no gradient
        let e = exp(t)
        return ((e - 1) / (alpha - 1), e)
    }
}

/// Total loss sum_k w_k * mean_i(omega_i * L_k,i) and its gradient (dpo-math.md, "Loss types").
public func dpoLoss(_ x: DPOLossInput, config: DPOConfig) -> DPOLossOutput {
    let n = x.pairs
    let beta = config.beta, eps = config.labelSmoothing
    var dChosen = [Double](repeating: 0, count: n), dRejected = [Double](repeating: 0, count: n)
    var dChosenToken = 0.0
    var total = 0.0
    let omega = x.pairWeights ?? [Double](repeating: 1, count: n)
    let meanOmega = omega.reduce(0, +) / Double(max(n, 1))

    // Log-ratios and scores.
    var rc = [Double](repeating: 0, count: n), rr = rc, sc = rc, sr = rc, dsc = rc, dsr = rc
    for i in 0..<n {
        rc[i] = x.policyChosen[i] - x.refChosen[i]
        rr[i] = x.policyRejected[i] - x.refRejected[i]
        (sc[i], dsc[i]) = fDivergenceScore(rc[i], config.fDivergenceType, alpha: config.fAlphaDivergenceCoef)
        (sr[i], dsr[i]) = fDivergenceScore(rr[i], config.fDivergenceType, alpha: config.fAlphaDivergenceCoef)
    }

    for (type, weight) in zip(config.lossType, config.resolvedLossWeights) {
        // Per pair: the loss and its partial derivatives in the policy sums.
        var losses = [Double](repeating: 0, count: n)
        var gc = [Double](repeating: 0, count: n), gr = gc
        /// Losses of x = beta * D: per-pair value and dL/dx, chained through D = s_c - s_r.
        func onDelta(_ f: (Double) -> (Double, Double)) {
            for i in 0..<n {
                let (l, dl) = f(beta * (sc[i] - sr[i]))
                losses[i] = l
                gc[i] = dl * beta * dsc[i]
                gr[i] = -dl * beta * dsr[i]
            }
        }
        switch type {
        case .sigmoid:
            onDelta { v in (-logSigmoid(v), -sigmoidD(-v)) }
        case .hinge:
            onDelta { v in 1 - v > 0 ? (1 - v, -1) : (0, 0) }
        case .exoPair:
            // q (ls(v) - log(1-eps)) + (1-q)(ls(-v) - log eps), q = sigmoid(v);
            // dL/dv = q (1-q) (v - log(1-eps) + log eps).
            onDelta { v in
                let q = sigmoidD(v)
                let l = q * (logSigmoid(v) - log1p(-eps)) + (1 - q) * (logSigmoid(-v) - log(eps))
                return (l, q * (1 - q) * (v - log1p(-eps) + log(eps)))
            }
        case .robust:
            onDelta { v in
                let l = (-(1 - eps) * logSigmoid(v) + eps * logSigmoid(-v)) / (1 - 2 * eps)
                return (l, (-(1 - eps) * sigmoidD(-v) - eps * sigmoidD(v)) / (1 - 2 * eps))
            }
        case .discopop:
            // x = v; g = sigmoid(v / tau); L = (1-g)(-ls(v)) + g exp(-v).
            let tau = config.discopopTau
            onDelta { v in
                let g = sigmoidD(v / tau), dg = g * (1 - g) / tau
                let logistic = -logSigmoid(v), ex = exp(-v)
                let l = (1 - g) * logistic + g * ex
                let dl = -dg * logistic + (1 - g) * (-sigmoidD(-v)) + dg * ex - g * ex
                return (l, dl)
            }
        case .ipo, .sigmoidNorm:
            // u = s_c / n_c - s_r / n_r
            for i in 0..<n {
                let u = sc[i] / x.chosenTokens[i] - sr[i] / x.rejectedTokens[i]
                let dl: Double
                if type == .ipo {
                    let e = u - 1 / (2 * beta)
                    losses[i] = e * e; dl = 2 * e
                } else {
                    losses[i] = -logSigmoid(beta * u); dl = -beta * sigmoidD(-beta * u)
                }
                gc[i] = dl * dsc[i] / x.chosenTokens[i]
                gr[i] = -dl * dsr[i] / x.rejectedTokens[i]
            }
        case .ncaPair:  // raw log-ratios: a = beta rc, b = beta rr
            for i in 0..<n {
                let a = beta * rc[i], b = beta * rr[i]
                losses[i] = -logSigmoid(a) - 0.5 * logSigmoid(-a) - 0.5 * logSigmoid(-b)
                gc[i] = beta * (-sigmoidD(-a) + 0.5 * sigmoidD(a))
                gr[i] = beta * 0.5 * sigmoidD(b)
            }
        case .bcoPair:
            for i in 0..<n {
                let a = beta * rc[i], b = beta * rr[i]
                losses[i] = -logSigmoid(a) - logSigmoid(-b)
                gc[i] = -beta * sigmoidD(-a)
                gr[i] = beta * sigmoidD(b)
            }
        case .sppoHard:
            for i in 0..<n {
                let a = rc[i] - 0.5 / beta, b = rr[i] + 0.5 / beta
                losses[i] = a * a + b * b
                gc[i] = 2 * a
                gr[i] = 2 * b
            }
        case .aot, .aotUnpaired:
            // Sorted over the batch: delta_j = sorted(u)_j - sorted(w)_j; the gradient of delta_j goes
            // to the pairs that landed at rank j.
            let u: [Double], w: [Double]
            if type == .aot {
                u = (0..<n).map { x.policyChosen[$0] - x.policyRejected[$0] }
                w = (0..<n).map { x.refChosen[$0] - x.refRejected[$0] }
            } else {
                u = rc; w = rr
            }
            let ou = (0..<n).sorted { u[$0] < u[$1] || (u[$0] == u[$1] && $0 < $1) }
            let ow = (0..<n).sorted { w[$0] < w[$1] || (w[$0] == w[$1] && $0 < $1) }
            for j in 0..<n {
                let v = beta * (u[ou[j]] - w[ow[j]])
                losses[j] = -(1 - eps) * logSigmoid(v) - eps * logSigmoid(-v)
                let dl = beta * (-(1 - eps) * sigmoidD(-v) + eps * sigmoidD(v))
                if type == .aot {
                    // u = pc - pr (w has no policy dependence)
                    gc[ou[j]] += dl; gr[ou[j]] -= dl
                } else {
                    // u = rc sorted, w = rr sorted
                    gc[ou[j]] += dl; gr[ow[j]] -= dl
                }
            }
        case .apoZero:
            for i in 0..<n {
                let a = sigmoidD(beta * rc[i]), b = sigmoidD(beta * rr[i])
                losses[i] = 1 - a + b
                gc[i] = -beta * a * (1 - a)
                gr[i] = beta * b * (1 - b)
            }
        case .apoDown:
            for i in 0..<n {
                let a = sigmoidD(beta * rc[i]), c = sigmoidD(beta * (rc[i] - rr[i]))
                losses[i] = a + 1 - c
                gc[i] = beta * a * (1 - a) - beta * c * (1 - c)
                gr[i] = beta * c * (1 - c)
            }
        case .sft:
            // One batch scalar: -mean of every chosen completion token's log-prob; with WPO each
            // pair's copy is scaled by omega_i, so the mean over pairs scales it by mean(omega).
            let count = Double(max(x.chosenTokenCount, 1))
            total += weight * meanOmega * (-x.chosenTokenLogpSum / count)
            dChosenToken += weight * meanOmega * (-1 / count)
            continue
        }
        // aot/aot_unpaired index losses by rank, not pair; WPO is refused for them, so omega = 1.
        for i in 0..<n {
            total += weight * omega[i] * losses[i] / Double(n)
            dChosen[i] += weight * omega[i] * gc[i] / Double(n)
            dRejected[i] += weight * omega[i] * gr[i] / Double(n)
        }
    }
    return DPOLossOutput(loss: total, dChosen: dChosen, dRejected: dRejected, dChosenToken: dChosenToken)
}
