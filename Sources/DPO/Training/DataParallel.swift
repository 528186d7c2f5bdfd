// Data-parallel training (see Communicator): each rank runs forward and backward on its shard of a
// global batch; the small per-example quantities the loss needs are gathered, so every rank
// computes the loss, its gradient with respect to each example and the metrics of the *whole*
// global batch, exactly as one process holding it would (in the same order: losses that couple
// the batch's examples, such as aot's sorting, the rpo `sft` term's token mean or WPO's mean
// weight, stay exact). Each rank backpropagates only its own examples' part, so the sum of the
// ranks' gradient buffers, which the optimizer step all-reduces, is the global batch's gradient.
//
// Per micro-batch that costs two allreduces of a few doubles per example; per optimizer step, one
// allreduce of the gradient buffer. Nothing else is exchanged: weights and optimizer moments stay
// identical on every rank because every rank applies the same update to the same values.

extension OptimizationState {
    /// The backward of a data-parallel micro-batch: this rank's part (nil when its shard is empty)
    /// added to the gradient buffer. No local finiteness check or backup copy: a non-finite part
    /// makes the all-reduced gradient non-finite, which every rank then refuses together at the
    /// optimizer step.
    func shardBackward(_ dlogp: [Float]?) throws {
        if let holder = model.gradientHolder, holder !== self {
            throw DPOError.wrongState("the model's gradient buffer holds another trainer's accumulated micro-batches: step that trainer's optimizer (or free it) first; nothing was changed")
        }
        try checkTrained()
        if pendingMicroBatches == 0 { try model.zeroGradients() }
        if let dlogp { try model.backward(dlogp: dlogp) }
        pendingMicroBatches += 1
    }

    /// Sums the ranks' gradient buffers in place (the optimizer step's allreduce).
    func allreduceGradients(_ c: Communicator) throws {
        guard let g = model.trainableGradients else { throw DPOError.internal("no gradient buffer to all-reduce") }
        try c.allreduceSum(UnsafeMutableBufferPointer(start: g.pointer, count: g.count))
    }

    /// After a refused data-parallel step: the buffer holds the ranks' sum, not this rank's part,
    /// so the accumulated micro-batches cannot be kept; every rank drops them alike.
    func dropAccumulation() {
        model.trainableGradients?.zero()
        pendingMicroBatches = 0
    }
}

extension PairStatistics {
    /// The statistics of a gathered global batch (no per-row factors: those stay with each rank).
    init(chosen: [Double], rejected: [Double], pairWeights: [Double], sums s: [Double]) throws {
        self.chosen = chosen; self.rejected = rejected; self.pairWeights = pairWeights
        rowFactor = []
        chosenTokenLogpSum = s[0]; chosenTokenCount = try exactCount(s[1], "the chosen token count")
        chosenMeanLogitSum = s[2]; rejectedMeanLogitSum = s[3]
        entropySum = s[4]; chosenArgmaxHits = s[5]; rejectedTokenCount = try exactCount(s[6], "the rejected token count")
    }

    /// The batch sums `init(chosen:rejected:pairWeights:sums:)` takes back.
    var sums: [Double] {
        [chosenTokenLogpSum, Double(chosenTokenCount), chosenMeanLogitSum, rejectedMeanLogitSum,
         entropySum, chosenArgmaxHits, Double(rejectedTokenCount)]
    }
}

extension DPOTrainer {
    /// A global batch as every rank sees it after the gather, plus this rank's own part.
    struct GatheredPairs {
        let global: GlobalBatch
        /// This rank's packed batch and forward (nil for an empty shard).
        let local: (batch: PackedPreferenceBatch, stats: PairStatistics)?
        /// The loss input, statistics and reference sums of the whole global batch.
        let input: DPOLossInput, stats: PairStatistics, refChosen: [Double], refRejected: [Double]
        /// Tokens of the whole global batch (TRL's num_tokens counts every process's).
        let numTokens: Int
    }

    /// Collective: this rank's forward (activations kept for a backward when `train`), then the
    /// gather of every rank's per-pair sums. A failure of any rank's local part throws on all.
    func gatherPairs(_ pairs: [PreferencePair], train: Bool, _ c: Communicator) throws -> GatheredPairs {
        var local: (batch: PackedPreferenceBatch, out: HeadOutputs, refChosen: [Double], refRejected: [Double])?
        var failure: Error?
        if !pairs.isEmpty {
            do {
                let batch = try pack(pairs)
                let (rc, rr) = try referenceSums(pairs, batch)
                let out = try policy.forward(batch.packed, head: batch.head, keepActivations: train)
                try out.requireFinite("policy")
                local = (batch, out, rc, rr)
            } catch { failure = error }
        }
        do {
            let global = try GlobalBatch(count: pairs.count, localFailure: failure, c)
            if global.total == 0 { throw DPOError.invalidArgument("batch: no pairs on any of the \(c.size) ranks") }
            let stats = local.map { PairStatistics($0.out, batch: $0.batch, ldAlpha: config.ldAlpha) }
            var columns = [[Double]](repeating: [], count: 7)
            var sums = [Double](repeating: 0, count: 8)
            if let l = local, let s = stats {
                let input = lossInput(s, l.batch, l.refChosen, l.refRejected)
                columns = [input.policyChosen, input.policyRejected, input.refChosen, input.refRejected,
                           input.chosenTokens, input.rejectedTokens, s.pairWeights]
                sums = s.sums + [Double(l.batch.numTokens)]
            }
            let (g, total) = try global.gather(columns: columns, sums: sums, c)
            let globalStats = try PairStatistics(chosen: g[0], rejected: g[1], pairWeights: g[6], sums: total)
            let input = DPOLossInput(policyChosen: g[0], policyRejected: g[1], refChosen: g[2], refRejected: g[3],
                                     chosenTokens: g[4], rejectedTokens: g[5],
                                     pairWeights: config.useWeighting ? g[6] : nil,
                                     chosenTokenLogpSum: total[0], chosenTokenCount: globalStats.chosenTokenCount)
            return GatheredPairs(global: global, local: local.flatMap { l in stats.map { (l.batch, $0) } },
                                 input: input, stats: globalStats, refChosen: g[2], refRejected: g[3],
                                 numTokens: try exactCount(total[7], "the token count"))
        } catch {
            if train { policy.pending = nil }
            throw error
        }
    }

    /// `accumulate` under a communicator: the global batch's loss, this rank's part of its gradient.
    func accumulateShard(_ pairs: [PreferencePair], _ c: Communicator) throws -> DPOMetrics {
        let g = try gatherPairs(pairs, train: true, c)
        let result = dpoLoss(g.input, config: config)
        if !result.loss.isFinite {
            policy.pending = nil
            throw DPOError.numeric("the loss of this batch is \(result.loss); nothing was changed")
        }
        var dlogp: [Float]?
        if let (batch, stats) = g.local {
            let k = Double(config.optimizer.gradientAccumulationSteps)
            var d = [Float](repeating: 0, count: batch.owners.count)
            for (r, o) in batch.owners.enumerated() where o.pair >= 0 {
                let i = g.global.offset + Int(o.pair)
                let v = o.chosen ? result.dChosen[i] * stats.rowFactor[r] + result.dChosenToken
                                 : result.dRejected[i] * stats.rowFactor[r]
                d[r] = Float(v / k)
            }
            dlogp = d
        }
        try state.shardBackward(dlogp)
        state.numTokens += g.numTokens
        var metrics = DPOMetrics(loss: result.loss, beta: config.beta, policy: g.stats,
                                 refChosen: g.refChosen, refRejected: g.refRejected)
        metrics.numTokens = Double(state.numTokens)
        pendingMetrics.append(metrics)
        return metrics
    }

    /// `evaluate` under a communicator: the metrics of the global batch.
    func evaluateShard(_ pairs: [PreferencePair], _ c: Communicator) throws -> DPOMetrics {
        let g = try gatherPairs(pairs, train: false, c)
        let result = dpoLoss(g.input, config: config)
        if !result.loss.isFinite { throw DPOError.numeric("the loss of this batch is \(result.loss)") }
        var metrics = DPOMetrics(loss: result.loss, beta: config.beta, policy: g.stats,
                                 refChosen: g.refChosen, refRejected: g.refRejected)
        metrics.numTokens = Double(state.numTokens)
        return metrics
    }
}

extension SFTTrainer {
    /// Collective: this rank's forward, then the sums of the whole global batch:
    /// [learned tokens, log-prob sum, argmax hits, entropy sum, tokens].
    func gatherTokens(_ examples: [SFTExample], train: Bool, _ c: Communicator) throws -> (sums: [Double], out: HeadOutputs?, numTokens: Int) {
        var local: (p: Packed, out: HeadOutputs)?
        var failure: Error?
        if !examples.isEmpty {
            do {
                let p = try pack(examples)
                let out = try model.forward(p.packed, head: p.head, keepActivations: train)
                try out.requireFinite("model")
                local = (p, out)
            } catch { failure = error }
        }
        do {
            let global = try GlobalBatch(count: examples.count, localFailure: failure, c)
            if global.total == 0 { throw DPOError.invalidArgument("batch: no examples on any of the \(c.size) ranks") }
            var sums = [Double](repeating: 0, count: 5)
            if let (p, out) = local {
                sums = [Double(out.logps.count), out.logps.reduce(0.0) { $0 + Double($1) },
                        out.argmaxHit.reduce(0.0) { $0 + Double($1) }, out.entropy.reduce(0.0) { $0 + Double($1) },
                        Double(p.numTokens)]
            }
            let total = try global.gather(columns: [], sums: sums, c).sums
            if try exactCount(total[0], "the learned token count") == 0 {
                throw DPOError.internal("communicator: the global batch has no learned tokens")
            }
            return (total, local?.out, try exactCount(total[4], "the token count"))
        } catch {
            if train { model.pending = nil }
            throw error
        }
    }

    static func metrics(sums s: [Double]) -> SFTMetrics {
        var m = SFTMetrics()
        m.loss = -s[1] / s[0]
        m.meanTokenAccuracy = s[2] / s[0]
        m.entropy = s[3] / s[0]
        return m
    }

    /// `accumulate` under a communicator: the token mean over the global batch's learned tokens.
    func accumulateShard(_ examples: [SFTExample], _ c: Communicator) throws -> SFTMetrics {
        let (sums, out, tokens) = try gatherTokens(examples, train: true, c)
        var m = Self.metrics(sums: sums)
        if !m.loss.isFinite {
            model.pending = nil
            throw DPOError.numeric("the loss of this batch is \(m.loss); nothing was changed")
        }
        // loss = -(1/N) sum logp over the global batch's N learned tokens.
        let k = Float(config.optimizer.gradientAccumulationSteps)
        let d = -1 / (Float(sums[0]) * k)
        try state.shardBackward(out.map { [Float](repeating: d, count: $0.logps.count) })
        state.numTokens += tokens
        m.numTokens = Double(state.numTokens)
        pendingMetrics.append(m)
        return m
    }

    func evaluateShard(_ examples: [SFTExample], _ c: Communicator) throws -> SFTMetrics {
        var m = Self.metrics(sums: try gatherTokens(examples, train: false, c).sums)
        if !m.loss.isFinite { throw DPOError.numeric("the loss of this batch is \(m.loss)") }
        m.numTokens = Double(state.numTokens)
        return m
    }
}
