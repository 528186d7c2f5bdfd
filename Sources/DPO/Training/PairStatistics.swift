#if canImport(Glibc)
import Glibc
#endif

/// Per-pair sums and batch statistics of one model's head outputs over a packed preference batch.
struct PairStatistics {
    /// Completion log-prob sums (LD-weighted when `ld_alpha` is set), one per pair.
    var chosen: [Double], rejected: [Double]
    /// LD-DPO factor of each head row: 1 inside the shared length, `ld_alpha` past it.
    var rowFactor: [Double]
    /// WPO weights w_c * w_r per pair (computed always; used with `use_weighting`).
    var pairWeights: [Double]
    /// Raw (unweighted) sum and count of chosen completion token log-probs (the `sft` loss).
    var chosenTokenLogpSum: Double, chosenTokenCount: Int
    /// Token-weighted metric sums.
    var chosenMeanLogitSum: Double, rejectedMeanLogitSum: Double
    var entropySum: Double, chosenArgmaxHits: Double, rejectedTokenCount: Int

    init(_ out: HeadOutputs, batch b: PackedPreferenceBatch, ldAlpha: Double?) {
        let n = b.pairs
        chosen = [Double](repeating: 0, count: n); rejected = chosen
        var chosenAligned = chosen, rejectedAligned = chosen
        rowFactor = [Double](repeating: 1, count: b.owners.count)
        chosenTokenLogpSum = 0; chosenTokenCount = 0
        chosenMeanLogitSum = 0; rejectedMeanLogitSum = 0; entropySum = 0; chosenArgmaxHits = 0
        rejectedTokenCount = 0
        for (r, o) in b.owners.enumerated() where o.pair >= 0 {
            let i = Int(o.pair)
            if let a = ldAlpha {
                let shared = min(b.chosenScored[i], b.rejectedScored[i])
                if Int(o.position) > shared { rowFactor[r] = a }
            }
            let lp = Double(out.logps[r])
            // WPO: log p_t - log sum_v p_t(v)^2, averaged over the sequence's scored tokens.
            let aligned = lp - Double(out.logSumP2[r])
            entropySum += Double(out.entropy[r])
            if o.chosen {
                chosen[i] += rowFactor[r] * lp
                chosenAligned[i] += aligned
                chosenTokenLogpSum += lp; chosenTokenCount += 1
                chosenMeanLogitSum += Double(out.meanLogit[r])
                chosenArgmaxHits += Double(out.argmaxHit[r])
            } else {
                rejected[i] += rowFactor[r] * lp
                rejectedAligned[i] += aligned
                rejectedMeanLogitSum += Double(out.meanLogit[r])
                rejectedTokenCount += 1
            }
        }
        pairWeights = (0..<n).map { i in
            exp(chosenAligned[i] / Double(b.chosenScored[i])) * exp(rejectedAligned[i] / Double(b.rejectedScored[i]))
        }
    }
}
