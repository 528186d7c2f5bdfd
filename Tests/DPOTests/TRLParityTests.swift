import XCTest
@testable import DPO

/// Golden parity with TRL 1.16's DPOTrainer (fixtures made by tools/make_trl_fixtures.py): for
/// every configuration, the loss and every metric of one step, the weights after one clipped AdamW
/// step, and a 10-step run with a linear schedule and warmup.
final class TRLParityTests: XCTestCase {
    static let dir = TestModels.fixturesDirectory() + "/trl"
    /// TrainingArguments fields of the fixture that swift-dpo has no counterpart for (they only
    /// pin TRL's run: device, precision, sampler, checkpointing).
    static let ignoredKeys: Set<String> = ["optim", "per_device_train_batch_size", "gradient_checkpointing", "bf16",
                                           "fp16", "use_cpu", "train_sampling_strategy", "disable_dropout",
                                           "padding_free", "ref_model"]
    static let metricNames = ["loss", "grad_norm", "learning_rate", "entropy", "num_tokens", "logits/chosen",
                              "logits/rejected", "mean_token_accuracy", "rewards/chosen", "rewards/rejected",
                              "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"]

    lazy var cases: JSONObject = try! JSON.parse(try! readFile(Self.dir + "/cases.json")).object!["cases"]!.object!
    lazy var pairs: [PreferencePair] = try! JSON.parse(try! readFile(Self.dir + "/batch.json")).object!["pairs"]!.array!.map { v in
        let inputs = v.object!["model_inputs"]!.object!
        func ids(_ k: String) -> [Int32] { inputs[k]!.array!.map { Int32($0.int!) } }
        return PreferencePair(promptIds: ids("prompt"), chosenIds: ids("chosen"), rejectedIds: ids("rejected"))
    }

    func trainer(for caseConfig: JSONObject) throws -> (DPOTrainer, [PreferencePair]) {
        var config = DPOConfig()
        for key in caseConfig.keys where !Self.ignoredKeys.contains(key) { try config.set(key, caseConfig[key]!) }
        try config.validate()
        let policy = try LlamaModel.load(directory: Self.dir + "/policy")
        let hasRef = !(caseConfig["ref_model"]?.isNull ?? true)
        let ref = hasRef ? try LlamaModel.load(directory: Self.dir + "/ref") : nil
        var batch = pairs
        if config.precomputeRefLogProbs {
            // TRL computes them once up front with the reference model.
            var plain = config; plain.precomputeRefLogProbs = false
            let pre = try DPOTrainer(policy: try LlamaModel.load(directory: Self.dir + "/policy"), reference: ref, config: plain)
                .precomputeReferenceLogProbs(batch)
            for i in batch.indices { batch[i].refChosenLogps = pre[i].chosen; batch[i].refRejectedLogps = pre[i].rejected }
            return (try DPOTrainer(policy: policy, reference: nil, config: config), batch)
        }
        return (try DPOTrainer(policy: policy, reference: ref, config: config), batch)
    }

    /// |a - b| <= tol * max(1, |b|): the larger of the absolute and the relative error.
    func deviation(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(1, abs(b)) }

    func testEveryConfigurationOneStep() throws {
        var worst: [String: (Double, String)] = [:]
        var stepChecks = 0
        for name in cases.keys where name != "curve_linear_warmup" {
            let c = cases[name]!.object!
            let (t, batch) = try trainer(for: c["config"]!.object!)
            let result = try t.step(batch)
            XCTAssertTrue(result.optimizerStepped)
            let got = Dictionary(uniqueKeysWithValues: result.metrics.named().map { ($0.name, $0.value) })
            let expected = c["metrics"]!.object!
            for m in Self.metricNames {
                let e = expected[m]!.double!, g = got[m]!
                let d = deviation(g, e)
                if d > (worst[m]?.0 ?? -1) { worst[m] = (d, name) }
                XCTAssertLessThanOrEqual(d, 1e-4, "\(name): \(m) = \(g), TRL \(e)")
            }
            if let file = c["step_weights"]?.string {
                stepChecks += 1
                let lr = t.config.optimizer.learningRate
                let expectedWeights = try SafetensorsFile.open(Self.dir + "/" + file)
                var total = 0, close = 0, maxDiff: Float = 0
                for spec in t.policy.layout.tensors {
                    let e = try expectedWeights.floats(spec.name), p = t.policy.parameter(spec.name)!
                    for i in 0..<e.count {
                        let d = abs(p[i] - e[i])
                        total += 1
                        if Double(d) <= 1e-6 + 1e-3 * lr { close += 1 }
                        maxDiff = max(maxDiff, d)
                    }
                }
                let fraction = Double(close) / Double(total)
                print("TRL parity \(name): stepped weights within 1e-6 + 1e-3 lr: \(close)/\(total), max |diff| \(maxDiff)")
                XCTAssertGreaterThanOrEqual(fraction, 0.999, "\(name): \(close) of \(total) entries close")
                XCTAssertLessThanOrEqual(Double(maxDiff), 2 * lr, name)
            }
        }
        XCTAssertGreaterThanOrEqual(stepChecks, 7)
        for m in Self.metricNames.sorted() {
            if let (d, name) = worst[m] { print(String(format: "TRL parity: largest deviation of %@ = %.2e (%@)", m, d, name)) }
        }
    }

    func testTenStepsLinearWarmupCurve() throws {
        let c = cases["curve_linear_warmup"]!.object!
        let (t, batch) = try trainer(for: c["config"]!.object!)
        var worst = 0.0
        for (i, s) in c["steps"]!.array!.enumerated() {
            let m = try t.step(batch).metrics
            let expected = s.object!
            XCTAssertEqual(m.loss, expected["loss"]!.double!, accuracy: 1e-3, "step \(i + 1) loss")
            XCTAssertEqual(m.learningRate!, expected["learning_rate"]!.double!, accuracy: 1e-12, "step \(i + 1) lr")
            worst = max(worst, abs(m.loss - expected["loss"]!.double!))
        }
        print("TRL parity: 10-step linear-warmup loss curve, largest deviation \(worst)")
    }
}
