import XCTest
@testable import DPO

/// Golden parity with PEFT 0.21 + TRL 1.16 (fixtures made by tools/make_lora_fixtures.py on the
/// TRL fixtures' tiny model and batch): PEFT adapter files load and compute PEFT's log-probs,
/// merge_and_unload gives PEFT's merged weights, TRL's DPO runs on a PeftModel (a separate
/// reference model, or TRL's frozen "ref" copy of the adapter) give the same metrics and adapter
/// weights, and the files swift-dpo writes carry PEFT's keys and shapes.
final class LoraParityTests: XCTestCase {
    static let dir = TestModels.fixturesDirectory() + "/lora"
    static let trl = TestModels.fixturesDirectory() + "/trl"
    lazy var cases: JSONObject = try! JSON.parse(try! readFile(Self.dir + "/cases.json")).object!
    lazy var pairs: [PreferencePair] = try! JSON.parse(try! readFile(Self.trl + "/batch.json")).object!["pairs"]!.array!.map { v in
        let inputs = v.object!["model_inputs"]!.object!
        func ids(_ k: String) -> [Int32] { inputs[k]!.array!.map { Int32($0.int!) } }
        return PreferencePair(promptIds: ids("prompt"), chosenIds: ids("chosen"), rejectedIds: ids("rejected"))
    }

    func deviation(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(1, abs(b)) }

    func policy(adapter name: String) throws -> LlamaModel {
        let model = try LlamaModel.load(directory: Self.trl + "/policy")
        try model.loadAdapter(directory: Self.dir + "/\(name)/adapter")
        return model
    }

    /// Per-pair log-prob sums of `model` as it is (adapter on).
    func logps(_ model: LlamaModel) throws -> [[Double]] {
        var c = DPOConfig(); c.precomputeRefLogProbs = true
        let sums = try DPOTrainer(policy: model, config: c).precomputeReferenceLogProbs(pairs)
        return sums.map { [$0.chosen, $0.rejected] }
    }

    func testLogProbsAndMergeMatchPEFT() throws {
        for name in ["all_linear", "qv_rslora"] {
            let expected = cases["adapters"]!.object![name]!.object!
            let model = try policy(adapter: name)
            let config = model.adapter!.config
            XCTAssertEqual(config.r, expected["config"]!.object!["r"]!.int)
            let got = try logps(model)
            var worst = 0.0
            for (g, e) in zip(got.joined(), expected["logps"]!.array!.flatMap { $0.array! }) {
                worst = max(worst, deviation(g, e.double!))
            }
            XCTAssertLessThanOrEqual(worst, 1e-5, name)
            let off = try model.withAdaptersDisabled { try logps(model) }
            for (g, e) in zip(off.joined(), expected["base_logps"]!.array!.flatMap { $0.array! }) {
                XCTAssertLessThanOrEqual(deviation(g, e.double!), 1e-5, "\(name) adapters off")
            }
            print("LoRA parity \(name): PEFT log-prob sums, largest deviation \(worst)")

            try model.mergeAndUnload()
            let merged = try SafetensorsFile.open(Self.dir + "/\(name)/merged.safetensors")
            var maxDiff: Float = 0
            for tensor in merged.tensorNames {
                let e = try merged.floats(tensor), p = try XCTUnwrap(model.parameter(tensor), tensor)
                for i in 0..<e.count { maxDiff = max(maxDiff, abs(p[i] - e[i])) }
            }
            XCTAssertEqual(merged.tensorNames.count, 2 * config.modules.count)
            XCTAssertLessThanOrEqual(maxDiff, 1e-6, "\(name): merged weights")
        }
    }

    func testDPORunsMatchTRL() throws {
        let runs = cases["runs"]!.object!
        for run in runs.keys {
            let s = runs[run]!.object!
            let model = try policy(adapter: s["adapter"]!.string!)
            var c = DPOConfig()
            c.beta = s["beta"]!.double!
            c.optimizer.learningRate = s["learning_rate"]!.double!
            c.optimizer.weightDecay = s["weight_decay"]!.double!
            c.optimizer.maxGradNorm = s["max_grad_norm"]!.double!
            c.optimizer.lrSchedulerType = .constant
            let ref = s["ref_model"] == .null ? nil : try LlamaModel.load(directory: Self.trl + "/ref")
            let trainer = try DPOTrainer(policy: model, reference: ref, config: c)
            XCTAssertEqual(trainer.referenceKind, ref == nil ? ReferenceKind.referenceAdapter : ReferenceKind.model)
            for (step, expected) in s["metrics"]!.array!.enumerated() {
                let result = try trainer.step(pairs)
                let got = Dictionary(uniqueKeysWithValues: result.metrics.named().map { ($0.name, $0.value) })
                let want = expected.object!
                for m in want.keys {
                    let e = want[m]!.double!, g = try XCTUnwrap(got[m], m)
                    XCTAssertLessThanOrEqual(deviation(g, e), 1e-4, "\(run) step \(step + 1): \(m) = \(g), TRL \(e)")
                }
            }
            let after = try SafetensorsFile.open(Self.dir + "/\(run).safetensors")
            let adapter = model.adapter!
            XCTAssertEqual(Set(after.tensorNames), Set(adapter.tensors.map(\.name)))
            var maxDiff: Float = 0
            for spec in adapter.tensors {
                let e = try after.floats(spec.name), p = adapter.parameter(spec.name)!
                for i in 0..<e.count { maxDiff = max(maxDiff, abs(p[i] - e[i])) }
            }
            print("LoRA parity \(run): adapter after \(s["steps"]!.int!) TRL step(s), max |diff| \(maxDiff)")
            XCTAssertLessThanOrEqual(maxDiff, 1e-5, run)
        }
    }

    /// What swift-dpo writes has PEFT's tensor names, shapes and config keys, and reads back the same.
    func testWrittenFilesHavePEFTsLayout() throws {
        for name in ["all_linear", "qv_rslora"] {
            let model = try policy(adapter: name)
            let out = try makeScratchDirectory() + "/adapter"
            try model.save(directory: out)
            let ours = try SafetensorsFile.open(out + "/adapter_model.safetensors")
            let peft = try SafetensorsFile.open(Self.dir + "/\(name)/adapter/adapter_model.safetensors")
            XCTAssertEqual(ours.tensorNames.sorted(), peft.tensorNames.sorted())
            for t in peft.tensorNames {
                XCTAssertEqual(ours.info(t)?.shape, peft.info(t)?.shape, t)
                XCTAssertEqual(try ours.floats(t), try peft.floats(t), t)
            }
            let oursConfig = try JSON.parse(try readFile(out + "/adapter_config.json")).object!
            let peftConfig = try JSON.parse(try readFile(Self.dir + "/\(name)/adapter/adapter_config.json")).object!
            for key in oursConfig.keys { XCTAssertNotNil(peftConfig[key], "PEFT has no key '\(key)'") }
            for key in ["r", "lora_alpha", "lora_dropout", "use_rslora", "task_type", "peft_type", "bias", "base_model_name_or_path"] {
                XCTAssertEqual(oursConfig[key], peftConfig[key], key)
            }
            XCTAssertEqual(Set(oursConfig["target_modules"]!.array!.map { $0.string! }),
                           Set(peftConfig["target_modules"]!.array!.map { $0.string! }))
        }
    }
}
