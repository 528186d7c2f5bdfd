import XCTest
@testable import DPO

/// d loss / d (policy sums) of every loss type and option, against central finite differences.
final class DPOLossTests: XCTestCase {
    func randomInput(pairs n: Int, seed: UInt64, weights: Bool) -> DPOLossInput {
        var rng = Xoshiro256(seed: seed)
        func r(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * rng.nextUniform() }
        // Log-ratios within +-4: where real training lives, and where exp(-r) (forward_kl) keeps the
        // difference quotient well conditioned.
        let pc = (0..<n).map { _ in r(-30, -5) }, pr = (0..<n).map { _ in r(-30, -5) }
        return DPOLossInput(
            policyChosen: pc, policyRejected: pr,
            refChosen: pc.map { $0 + r(-4, 4) }, refRejected: pr.map { $0 + r(-4, 4) },
            chosenTokens: (0..<n).map { _ in Double(Int(r(1, 12))) }, rejectedTokens: (0..<n).map { _ in Double(Int(r(1, 12))) },
            pairWeights: weights ? (0..<n).map { _ in r(0.1, 1) } : nil,
            chosenTokenLogpSum: r(-80, -20), chosenTokenCount: 17)
    }

    func checkGradient(_ config: DPOConfig, weights: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        let name = config.lossType.map(\.rawValue).joined(separator: "+") + " f=\(config.fDivergenceType.rawValue) eps=\(config.labelSmoothing)"
        for seed: UInt64 in [1, 2, 3] {
            // Scale log-ratios so beta * D lands in the interesting range of each loss.
            let x = randomInput(pairs: 5, seed: seed, weights: weights)
            let out = dpoLoss(x, config: config)
            XCTAssertTrue(out.loss.isFinite, name, file: file, line: line)
            let h = 1e-6
            func loss(_ edit: (inout DPOLossInput) -> Void) -> Double { var y = x; edit(&y); return dpoLoss(y, config: config).loss }
            for i in 0..<x.pairs {
                let fdC = (loss { $0.policyChosen[i] += h } - loss { $0.policyChosen[i] -= h }) / (2 * h)
                let fdR = (loss { $0.policyRejected[i] += h } - loss { $0.policyRejected[i] -= h }) / (2 * h)
                XCTAssertEqual(out.dChosen[i], fdC, accuracy: 1e-6 + 1e-5 * abs(fdC), "\(name) dChosen[\(i)] seed \(seed)", file: file, line: line)
                XCTAssertEqual(out.dRejected[i], fdR, accuracy: 1e-6 + 1e-5 * abs(fdR), "\(name) dRejected[\(i)] seed \(seed)", file: file, line: line)
            }
            let fdT = (loss { $0.chosenTokenLogpSum += h } - loss { $0.chosenTokenLogpSum -= h }) / (2 * h)
            XCTAssertEqual(out.dChosenToken, fdT, accuracy: 1e-7 + 1e-5 * abs(fdT), "\(name) sft token", file: file, line: line)
        }
    }

    func config(_ types: [DPOLossType], beta: Double = 0.1, eps: Double = 0, f: FDivergenceType = .reverseKL,
                weights: [Double]? = nil) -> DPOConfig {
        var c = DPOConfig()
        c.lossType = types; c.beta = beta; c.labelSmoothing = eps; c.fDivergenceType = f; c.lossWeights = weights
        return c
    }

    func testEveryLossType() throws {
        for t in DPOLossType.allCases {
            let eps = (t == .exoPair || t == .robust || t == .aot || t == .aotUnpaired) ? 0.1 : 0
            for beta in [0.1, 0.5] {
                let c = config([t], beta: beta, eps: eps)
                try c.validate()
                checkGradient(c)
            }
        }
    }

    func testLabelSmoothingOnSigmoid() { checkGradient(config([.sigmoid], eps: 0.2)) }

    func testFDivergences() throws {
        for f in FDivergenceType.allCases {
            for t: DPOLossType in [.sigmoid, .sigmoidNorm, .hinge, .ipo, .exoPair, .robust, .discopop, .sft] {
                let c = config([t], eps: (t == .exoPair || t == .robust) ? 0.1 : 0, f: f)
                try c.validate()
                checkGradient(c)
            }
        }
        var c = config([.sigmoid], f: .alphaDivergence); c.fAlphaDivergenceCoef = 1.0
        checkGradient(c)
    }

    func testWPOWeightsAndMultiLoss() {
        checkGradient(config([.sigmoid]), weights: true)
        checkGradient(config([.sigmoid, .sft], weights: [1, 0.5]), weights: true)
        checkGradient(config([.sigmoid, .bcoPair, .sft], weights: [0.8, 0.2, 1.0]))
        checkGradient(config([.ipo, .hinge], weights: [2, -0.5]))
    }

    /// LD-DPO through the per-token chain: loss as a function of every head row's log-prob.
    func testLDDPOPerTokenChain() throws {
        var c = config([.sigmoid, .sft], weights: [1, 0.3]); c.ldAlpha = 0.5
        let pairs = [PreferencePair(promptIds: [1, 2], chosenIds: [3, 4, 5, 6], rejectedIds: [7, 8]),
                     PreferencePair(promptIds: [9], chosenIds: [1], rejectedIds: [2, 3, 4])]
        let batch = try PackedPreferenceBatch(pairs: pairs, vocabSize: 16, maxLength: nil, truncation: .keepStart)
        var rng = Xoshiro256(seed: 5)
        let R = batch.owners.count
        let logps = (0..<R).map { _ in -0.2 - 3 * rng.nextUniform() }
        let ref: ([Double], [Double]) = ([-9, -3], [-4, -5])
        func loss(_ lp: [Double]) -> (Double, [Double]) {
            let out = HeadOutputs(logps: lp.map(Float.init), entropy: .init(repeating: 0, count: R),
                                  meanLogit: .init(repeating: 0, count: R), argmaxHit: .init(repeating: 0, count: R),
                                  logSumP2: .init(repeating: 0, count: R))
            var s = PairStatistics(out, batch: batch, ldAlpha: c.ldAlpha)
            // Float rounding of the head outputs would swamp the difference quotient: use Double sums.
            s.chosen = [0, 0]; s.rejected = [0, 0]; s.chosenTokenLogpSum = 0
            for (r, o) in batch.owners.enumerated() {
                if o.chosen { s.chosen[Int(o.pair)] += s.rowFactor[r] * lp[r]; s.chosenTokenLogpSum += lp[r] }
                else { s.rejected[Int(o.pair)] += s.rowFactor[r] * lp[r] }
            }
            let res = dpoLoss(DPOLossInput(policyChosen: s.chosen, policyRejected: s.rejected, refChosen: ref.0,
                                           refRejected: ref.1, chosenTokens: [4, 1], rejectedTokens: [2, 3],
                                           chosenTokenLogpSum: s.chosenTokenLogpSum, chosenTokenCount: s.chosenTokenCount),
                              config: c)
            let grad = batch.owners.enumerated().map { r, o in
                o.chosen ? res.dChosen[Int(o.pair)] * s.rowFactor[r] + res.dChosenToken : res.dRejected[Int(o.pair)] * s.rowFactor[r]
            }
            return (res.loss, grad)
        }
        let (_, grad) = loss(logps)
        // Pair 0: chosen has 4 scored tokens, rejected 2: chosen tokens 3 and 4 get factor 0.5.
        XCTAssertEqual(batch.owners.filter { $0.pair == 0 && $0.chosen }.map(\.position), [1, 2, 3, 4])
        for r in 0..<R {
            var up = logps, down = logps
            up[r] += 1e-6; down[r] -= 1e-6
            let fd = (loss(up).0 - loss(down).0) / 2e-6
            XCTAssertEqual(grad[r], fd, accuracy: 1e-6, "row \(r)")
        }
    }

    func testConfigValidationNamesTheField() {
        func refused(_ edit: (inout DPOConfig) -> Void, _ field: String, file: StaticString = #filePath, line: UInt = #line) {
            var c = DPOConfig(); edit(&c)
            XCTAssertThrowsError(try c.validate(), file: file, line: line) { e in
                XCTAssertTrue("\(e)".contains(field), "\(e) should name \(field)", file: file, line: line)
            }
        }
        XCTAssertThrowsError(try DPOLossType(name: "sigmoidd")) { XCTAssertTrue("\($0)".contains("sigmoidd")) }
        refused({ $0.lossType = [.exoPair] }, "label_smoothing")
        refused({ $0.lossType = [.robust]; $0.labelSmoothing = 0.5 }, "label_smoothing")
        refused({ $0.lossType = [.aot]; $0.useWeighting = true }, "use_weighting")
        refused({ $0.lossWeights = [1, 2] }, "loss_weights")
        refused({ $0.beta = 0 }, "beta")
        refused({ $0.beta = -1 }, "beta")
        refused({ $0.lossType = [.bcoPair]; $0.fDivergenceType = .forwardKL }, "f_divergence_type")
        refused({ $0.optimizer.learningRate = -1 }, "learning_rate")
        refused({ $0.optimizer.gradientAccumulationSteps = 0 }, "gradient_accumulation_steps")
        refused({ $0.optimizer.maxSteps = 0 }, "max_steps")
        refused({ $0.syncRefModel = true; $0.precomputeRefLogProbs = true }, "sync_ref_model")
        refused({ $0.ldAlpha = 2 }, "ld_alpha")
        XCTAssertNoThrow(try DPOConfig().validate())
    }
}
