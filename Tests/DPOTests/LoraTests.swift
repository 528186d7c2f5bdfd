import XCTest
@testable import DPO

/// LoRA in the engine: the adapter's forward and backward against independent references (the
/// naive Double model with merged weights W + s B A, finite differences), the exactness of the
/// adapters-off and fresh-adapter forwards, and the trainer training the adapter alone.
final class LoraTests: XCTestCase {
    /// A model with an attached adapter whose A and B are both random (init_lora_weights=False),
    /// so every adapter term matters.
    func adapted(_ config: LlamaConfig, _ lora: LoraConfig, seed: UInt64 = 7) throws -> LlamaModel {
        let model = try TestModels.model(config, seed: seed)
        var c = lora
        c.initLoraWeights = .random
        try model.addAdapter(c, seed: 5)
        return model
    }

    /// The naive Double model of `model`'s base with the adapter folded in (W + s B A), so its
    /// forward is the LoRA forward without dropout; `adapterValues` replaces the adapter's values.
    static func mergedNaive(_ model: LlamaModel, adapterValues: [Double]? = nil) -> NaiveLlama {
        var naive = NaiveLlama(model: model)
        let a = model.adapter!
        let values = adapterValues ?? a.parameters.array.map(Double.init)
        let r = a.config.r, s = a.config.scaling
        for (l, row) in a.slots.enumerated() {
            for m in LoraModule.allCases {
                guard let slot = row[m.rawValue] else { continue }
                let w = model.weightOffset(layer: l, m)
                for o in 0..<slot.outFeatures {
                    for i in 0..<slot.inFeatures {
                        var d = 0.0
                        for k in 0..<r { d += values[slot.b + o * r + k] * values[slot.a + k * slot.inFeatures + i] }
                        naive.params[w + o * slot.inFeatures + i] += s * d
                    }
                }
            }
        }
        return naive
    }

    // MARK: - Gradients

    /// d S / d A and d S / d B (S = sum_i w_i logp_i) against central differences of the naive
    /// merged model, for every adapted module of every layer: single entries and a directional
    /// derivative over each tensor. The base has no gradient buffer.
    func checkGradients(_ config: LlamaConfig, _ lora: LoraConfig, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try adapted(config, lora)
        let (packed, head) = TestModels.batch(vocab: config.vocabSize)
        var rng = Xoshiro256(seed: 11)
        let weights = (0..<head.count).map { _ in Float(rng.nextUniform() * 2 - 1) }
        // The LoRA forward equals the merged naive forward.
        let out = try model.forward(packed, head: head, keepActivations: true)
        let naiveLogps = LoraTests.mergedNaive(model).logps(packed, head)
        for (x, y) in zip(out.logps, naiveLogps) { XCTAssertEqual(Double(x), y, accuracy: 1e-4, file: file, line: line) }
        try model.zeroGradients()
        try model.backward(dlogp: weights)
        XCTAssertNil(model.gradients, "a frozen base has no gradient buffer", file: file, line: line)
        let adapter = model.adapter!
        let grads = adapter.gradients!.array
        var values = adapter.parameters.array.map(Double.init)
        func scalar() -> Double {
            zip(LoraTests.mergedNaive(model, adapterValues: values).logps(packed, head), weights).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        let h = 1e-5
        XCTAssertEqual(adapter.tensors.count, 2 * config.numHiddenLayers * lora.modules.count, file: file, line: line)
        for spec in adapter.tensors {
            let g = Array(grads[spec.offset..<(spec.offset + spec.count)])
            let scale = max(g.map { abs(Double($0)) }.max()!, 1e-3)
            for _ in 0..<2 {
                let i = spec.offset + Int(rng.next() % UInt64(spec.count))
                let saved = values[i]
                values[i] = saved + h; let up = scalar()
                values[i] = saved - h; let down = scalar()
                values[i] = saved
                XCTAssertEqual(Double(grads[i]), (up - down) / (2 * h), accuracy: 1e-3 * scale + 1e-6,
                               "\(spec.name)[\(i - spec.offset)]", file: file, line: line)
            }
            let dir = (0..<spec.count).map { _ in rng.nextUniform() * 2 - 1 }
            let saved = values
            for j in 0..<spec.count { values[spec.offset + j] += h * dir[j] }
            let up = scalar()
            values = saved
            for j in 0..<spec.count { values[spec.offset + j] -= h * dir[j] }
            let down = scalar()
            values = saved
            let fd = (up - down) / (2 * h)
            let analytic = zip(g, dir).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            XCTAssertEqual(analytic, fd, accuracy: 1e-3 * max(abs(fd), scale), "\(spec.name) directional", file: file, line: line)
        }
    }

    func testGradientsAllLinearGQATied() throws {
        try checkGradients(TestModels.gqaTied, LoraConfig(r: 3, loraAlpha: 6, targetModules: LoraModule.allCases))
    }

    func testGradientsRsLoraBiasesUntied() throws {
        try checkGradients(TestModels.mhaUntiedBias,
                           LoraConfig(r: 4, loraAlpha: 3, targetModules: LoraModule.allCases, useRslora: true))
    }

    func testGradientsDefaultTargetsQwen2() throws {
        // PEFT's default targets (q_proj, v_proj) on a model with q/k/v biases.
        try checkGradients(TestModels.qwen2, LoraConfig(r: 2, loraAlpha: 5))
    }

    /// The input gradient of one LoRA linear layer (frozen W plus the adapter, with and without
    /// dropout) against central differences of f(x) = sum dy * y(x) computed in Double, with the
    /// forward's dropout mask.
    func testInputGradientOfALoraLinear() throws {
        for p in [0.0, 0.3] {
            let rows = 5, inF = 7, outF = 6, r = 3
            var rng = Xoshiro256(seed: 42)
            func rand(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextUniform() * 2 - 1) } }
            let x = rand(rows * inF), w = rand(outF * inF), a = rand(r * inF), b = rand(outF * r), dy = rand(rows * outF)
            let scale: Float = 1.7
            let scratch = try LoraScratch(tokens: rows, rank: r, maxIn: inF, dropout: p > 0)
            let dropout = p > 0 ? LoraDropout(p: p, key: 12345) : nil
            var dx = [Float](repeating: 0, count: rows * inF), y = [Float](repeating: 0, count: rows * outF)
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    let ll = LoraLinear(a: a.baseAddress!, b: b.baseAddress!, rank: r, inFeatures: inF, outFeatures: outF,
                                        scale: scale, scratch: scratch, dropout: dropout, bf16: false)
                    frozenLinearForward(&y, x, weight: w, rows: rows, inFeatures: inF, outFeatures: outF, accumulate: false, bf16: false)
                    x.withUnsafeBufferPointer { ll.forward(&y, $0.baseAddress!, rows: rows) }
                    frozenLinearInputGradient(&dx, dy, weight: w, rows: rows, inFeatures: inF, outFeatures: outF,
                                              accumulate: false, bf16: false)
                    dy.withUnsafeBufferPointer { ll.addInputGradient(&dx, dy: $0.baseAddress!, rows: rows) }
                }
            }
            func f(_ x: [Double]) -> (value: Double, y: [Double]) {
                var total = 0.0, ys = [Double](repeating: 0, count: rows * outF)
                for t in 0..<rows {
                    var xd = [Double](repeating: 0, count: inF)
                    for i in 0..<inF {
                        let keep = dropout.map { $0.keeps(t * inF + i) } ?? true
                        xd[i] = keep ? x[t * inF + i] / (1 - p) : 0
                    }
                    let u = (0..<r).map { k in (0..<inF).reduce(0.0) { $0 + Double(a[k * inF + $1]) * xd[$1] } }
                    for o in 0..<outF {
                        var v = (0..<inF).reduce(0.0) { $0 + Double(w[o * inF + $1]) * x[t * inF + $1] }
                        v += Double(scale) * (0..<r).reduce(0.0) { $0 + Double(b[o * r + $1]) * u[$1] }
                        ys[t * outF + o] = v
                        total += Double(dy[t * outF + o]) * v
                    }
                }
                return (total, ys)
            }
            let xd = x.map(Double.init)
            for (i, v) in f(xd).y.enumerated() { XCTAssertEqual(Double(y[i]), v, accuracy: 1e-5, "y[\(i)] p \(p)") }
            let h = 1e-6
            for i in 0..<(rows * inF) {
                var up = xd, down = xd
                up[i] += h; down[i] -= h
                XCTAssertEqual(Double(dx[i]), (f(up).value - f(down).value) / (2 * h), accuracy: 1e-4, "dx[\(i)] p \(p)")
            }
        }
    }

    // MARK: - Exactness

    /// Adapters off: the forward is the base model's, bit for bit; a fresh adapter (B = 0, PEFT's
    /// default init) leaves the forward unchanged, bit for bit (log-probs, entropies, logits).
    func testAdaptersOffAndFreshAdapterEqualTheBase() throws {
        let config = TestModels.mhaUntiedBias
        let (packed, head) = TestModels.batch(vocab: config.vocabSize)
        let base = try TestModels.model(config).forward(packed, head: head, keepActivations: false)
        let model = try adapted(config, LoraConfig(r: 4, targetModules: LoraModule.allCases))
        let on = try model.forward(packed, head: head, keepActivations: false)
        XCTAssertNotEqual(on.logps, base.logps, "a random adapter changes the model")
        let off = try model.withAdaptersDisabled { try model.forward(packed, head: head, keepActivations: false) }
        XCTAssertEqual(off.logps, base.logps)
        XCTAssertEqual(off.entropy, base.entropy)
        XCTAssertEqual(off.meanLogit, base.meanLogit)

        let fresh = try TestModels.model(config)
        let adapter = try fresh.addAdapter(LoraConfig(r: 4, loraAlpha: 16, targetModules: LoraModule.allCases), seed: 3)
        XCTAssertTrue(adapter.tensors.filter { $0.name.contains("lora_A") }.allSatisfy { spec in
            adapter.parameter(spec.name)!.contains { $0 != 0 }
        }, "A is random")
        let freshOut = try fresh.forward(packed, head: head, keepActivations: false)
        XCTAssertEqual(freshOut.logps, base.logps)
        XCTAssertEqual(freshOut.entropy, base.entropy)
        XCTAssertEqual(freshOut.meanLogit, base.meanLogit)
    }

    /// PEFT's Kaiming-uniform A: every entry inside +-1/sqrt(in_features), spread over the range
    /// (sample variance near bound^2 / 3); B zero.
    func testDefaultInitialisation() throws {
        let config = TestModels.gqaTied
        let a = try LoraAdapter(config: LoraConfig(r: 8, targetModules: [.q, .down]), model: config, seed: 1)
        for spec in a.tensors {
            let v = a.parameter(spec.name)!
            if spec.name.contains("lora_B") { XCTAssertTrue(v.allSatisfy { $0 == 0 }, spec.name); continue }
            let bound = 1 / Float(spec.shape[1]).squareRoot()
            XCTAssertTrue(v.allSatisfy { abs($0) <= bound }, spec.name)
            let variance = v.reduce(0.0) { $0 + Double($1 * $1) } / Double(v.count)
            XCTAssertEqual(variance, Double(bound * bound) / 3, accuracy: 0.35 * Double(bound * bound) / 3, spec.name)
        }
        XCTAssertEqual(a.tensors.map(\.name).prefix(4), [
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
            "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
        ])
        XCTAssertEqual(a.tensor(named: "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")?.shape, [8, 24])
    }

    // MARK: - Training

    /// One DPO step with peft_config: the base weights are bit-identical afterwards, the adapter
    /// changed, no gradient buffer or moments exist for the base, and the reference is the base
    /// (the first step's reference log-probs equal the policy's: B starts at 0).
    func testDPOStepTrainsOnlyTheAdapter() throws {
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1)
        let before = policy.parameters.array
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        let trainer = try DPOTrainer(policy: policy, config: c,
                                     peftConfig: LoraConfig(r: 4, targetModules: LoraModule.allCases))
        XCTAssertEqual(trainer.referenceKind, .adaptersDisabled)
        let adapter = try XCTUnwrap(policy.adapter)
        XCTAssertEqual(trainer.state.adam.m.count, adapter.parameterCount)
        let adapterBefore = adapter.parameters.array
        let pairs = PreferenceTask.pairs(4, seed: 3)
        let first = try trainer.step(pairs)
        XCTAssertTrue(first.optimizerStepped)
        XCTAssertEqual(first.metrics.rewardsMargins, 0, accuracy: 1e-6, "fresh adapter: policy == reference")
        XCTAssertEqual(policy.parameters.array, before, "the base is frozen")
        XCTAssertNil(policy.gradients)
        XCTAssertNotEqual(adapter.parameters.array, adapterBefore)
        let second = try trainer.step(pairs)
        XCTAssertNotEqual(second.metrics.rewardsMargins, 0, "the trained adapter moved the policy away from the base")
        XCTAssertEqual(policy.parameters.array, before)
    }

    /// A trainer of a model that already has an adapter trains it against a frozen copy of its
    /// initial weights (TRL's "ref" adapter): on the first step the policy equals the reference
    /// even though B != 0.
    func testLoadedAdapterTrainsAgainstItsCopy() throws {
        let policy = try adapted(PreferenceTask.config, LoraConfig(r: 4, targetModules: [.q, .v, .down]))
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        let trainer = try DPOTrainer(policy: policy, config: c)
        XCTAssertEqual(trainer.referenceKind, .referenceAdapter)
        let pairs = PreferenceTask.pairs(4, seed: 3)
        let r = try trainer.step(pairs)
        XCTAssertEqual(r.metrics.rewardsMargins, 0, accuracy: 1e-6)
        // The reference log-probs are those of the model with the initial adapter, not the base's.
        let base = try policy.withAdaptersDisabled { try trainer.precomputeReferenceLogProbs(pairs) }
        let ref = try trainer.precomputeReferenceLogProbs(pairs)
        XCTAssertNotEqual(base.map(\.chosen), ref.map(\.chosen))
        XCTAssertThrowsError(try DPOTrainer(policy: policy, config: c, peftConfig: LoraConfig()))
    }

    /// SFT with peft_config trains the adapter only; bad configs are refused by name.
    func testSFTAndRefusals() throws {
        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1)
        let before = model.parameters.array
        var sc = SFTConfig()
        sc.optimizer.learningRate = 1e-2
        let sft = try SFTTrainer(model: model, config: sc, peftConfig: LoraConfig(r: 2, loraDropout: 0.1))
        let batch = PreferenceTask.pairs(4, seed: 1).map { SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds) }
        let l0 = try sft.step(batch).metrics.loss
        for _ in 0..<5 { _ = try sft.step(batch) }
        XCTAssertLessThan(try sft.step(batch).metrics.loss, l0)
        XCTAssertEqual(model.parameters.array, before)

        expectDPOError(["lora_dropout"]) { try LoraConfig(r: 2, loraDropout: 1).validate() }
        expectDPOError(["r must"]) { try LoraConfig(r: 0).validate() }
        expectDPOError(["lm_head", "not supported"]) { _ = try LoraConfig.targetModules(["lm_head"]) }
        expectDPOError(["unknown module 'fc1'"]) { _ = try LoraConfig.targetModules(["q_proj", "fc1"]) }
        expectDPOError(["already has a LoRA adapter"]) { try model.attachAdapter(try LoraAdapter(config: LoraConfig(), model: model.config, seed: 1)) }
        let other = try LlamaModel.randomlyInitialized(config: TestModels.gqaTied, seed: 1)
        expectDPOError(["maps"]) { try other.attachAdapter(try LoraAdapter(config: LoraConfig(), model: PreferenceTask.config, seed: 1)) }
    }

    /// adapter_config.json: PEFT's names both ways; unsupported features refused by key.
    func testConfigJSON() throws {
        var c = LoraConfig(r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: [.v, .q, .o], useRslora: true)
        c.baseModelNameOrPath = "HuggingFaceTB/SmolLM2-135M-Instruct"
        let o = c.jsonObject
        XCTAssertEqual(o["task_type"], .string("CAUSAL_LM"))
        XCTAssertEqual(o["peft_type"], .string("LORA"))
        XCTAssertEqual(o["target_modules"], .array([.string("q_proj"), .string("v_proj"), .string("o_proj")]))
        let back = try LoraConfig(json: o)
        XCTAssertEqual(back.modules, c.modules)
        XCTAssertEqual(back.r, 16); XCTAssertEqual(back.loraAlpha, 32); XCTAssertEqual(back.loraDropout, 0.05)
        XCTAssertTrue(back.useRslora)
        XCTAssertEqual(back.baseModelNameOrPath, c.baseModelNameOrPath)
        var all = o
        all["target_modules"] = .string("all-linear")
        XCTAssertEqual(try LoraConfig(json: all).modules, LoraModule.allCases)
        for (key, value, words) in [
            ("modules_to_save", JSONValue.array([.string("lm_head")]), ["modules_to_save", "lm_head"]),
            ("use_dora", .bool(true), ["use_dora"]),
            ("bias", .string("all"), ["bias"]),
            ("rank_pattern", .object(["q_proj": .number(4)]), ["rank_pattern"]),
            ("target_modules", .string(".*proj"), ["regular expression"]),
            ("r", .number(0), ["'r'"]),
            ("peft_type", .string("IA3"), ["IA3"]),
        ] {
            var bad = o
            bad[key] = value
            expectDPOError(words) { _ = try LoraConfig(json: bad) }
        }
    }
}

/// Adapter files in PEFT's format, merge_and_unload, and LoRA checkpoints.
final class LoraFileTests: XCTestCase {
    func randomAdapterModel(_ modules: [LoraModule] = LoraModule.allCases) throws -> LlamaModel {
        let model = try TestModels.model(TestModels.mhaUntiedBias)
        try model.addAdapter(LoraConfig(r: 3, loraAlpha: 5, targetModules: modules, initLoraWeights: .random), seed: 9)
        return model
    }

    /// save -> load gives the same adapter bit for bit; the files carry PEFT's names.
    func testSaveAndLoadRoundTrip() throws {
        let model = try randomAdapterModel()
        let dir = try makeScratchDirectory() + "/adapter"
        try model.save(directory: dir)  // save_pretrained of a LoRA model: the adapter files
        XCTAssertTrue(fileExists(dir + "/adapter_config.json"))
        XCTAssertFalse(fileExists(dir + "/model.safetensors"))
        let config = try JSON.parse(try readFile(dir + "/adapter_config.json")).object!
        XCTAssertEqual(config["task_type"], .string("CAUSAL_LM"))
        XCTAssertEqual(config["r"], .number(3))
        let file = try SafetensorsFile.open(dir + "/adapter_model.safetensors")
        XCTAssertEqual(file.info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")?.shape, [12, 3])
        XCTAssertEqual(file.tensorNames.count, 2 * 7 * 2)

        let other = try TestModels.model(TestModels.mhaUntiedBias)
        let loaded = try other.loadAdapter(directory: dir)
        XCTAssertEqual(loaded.parameters.array, model.adapter!.parameters.array)
        XCTAssertEqual(loaded.config.modules, LoraModule.allCases)
        let (packed, head) = TestModels.batch(vocab: 20)
        XCTAssertEqual(try other.forward(packed, head: head, keepActivations: false).logps,
                       try model.forward(packed, head: head, keepActivations: false).logps)
        expectDPOError(["already has a LoRA adapter"]) { try other.loadAdapter(directory: dir) }
        expectDPOError(["merge_and_unload"]) { try other.saveGGUF(path: dir + "/x.gguf", type: .f32) }
    }

    /// Bad adapter directories are refused with the file and tensor named, nothing attached.
    func testBadAdapterFilesAreRefused() throws {
        let model = try randomAdapterModel([.q, .v])
        let root = try makeScratchDirectory()
        let dir = root + "/a"
        try model.adapter!.save(directory: dir)
        let base = try TestModels.model(TestModels.mhaUntiedBias)
        func rewrite(_ name: String, drop: String? = nil, shape: [Int]? = nil, extra: String? = nil, nan: Bool = false) throws -> String {
            let d = root + "/" + name
            try model.adapter!.save(directory: d)
            var tensors: [(name: String, shape: [Int], data: [Float])] = model.adapter!.tensors.compactMap { s in
                s.name == drop ? nil : (s.name, s.shape, Array(model.adapter!.parameter(s.name)!))
            }
            if let shape { tensors[0].shape = shape; tensors[0].data = [Float](repeating: 0, count: shape.reduce(1, *)) }
            if let extra { tensors.append((extra, [1], [0])) }
            if nan { tensors[1].data[2] = .nan }
            let arrays = tensors.map { $0.data }
            try withExtendedLifetime(arrays) {
                let list = tensors.enumerated().map { i, t in
                    (name: t.name, shape: t.shape, data: arrays[i].withUnsafeBufferPointer { $0 })
                }
                try SafetensorsWriter.write(d + "/adapter_model.safetensors", tensors: list, metadata: [:])
            }
            return d
        }
        let missing = try rewrite("missing", drop: "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
        expectDPOError(["missing", "layers.1.self_attn.v_proj.lora_B"]) { try base.loadAdapter(directory: missing) }
        let shaped = try rewrite("shape", shape: [4, 12])
        expectDPOError(["shape [4, 12]"]) { try base.loadAdapter(directory: shaped) }
        let extra = try rewrite("extra", extra: "base_model.model.lm_head.weight")
        expectDPOError(["lm_head", "not part of the adapter"]) { try base.loadAdapter(directory: extra) }
        let nan = try rewrite("nan", nan: true)
        expectDPOError(["NaN"]) { try base.loadAdapter(directory: nan) }
        var json = try JSON.parse(try readFile(dir + "/adapter_config.json")).object!
        json["use_dora"] = .bool(true)
        try writeFileAtomically(dir + "/adapter_config.json", bytes: Array(JSON.serialize(.object(json)).utf8))
        expectDPOError(["adapter_config.json", "use_dora"]) { try base.loadAdapter(directory: dir) }
        expectDPOError(["no adapter_config.json"]) { try base.loadAdapter(directory: root) }
        XCTAssertNil(base.adapter)
    }

    /// merge_and_unload: W += s B A; the merged model computes what the adapted one did (fp32
    /// rounding apart) and has no adapter.
    func testMergeAndUnload() throws {
        let model = try randomAdapterModel()
        let (packed, head) = TestModels.batch(vocab: 20)
        let adapted = try model.forward(packed, head: head, keepActivations: false).logps
        let expected = LoraTests.mergedNaive(model).params
        // KV-cached generation runs the adapter too: greedy tokens and the base's differ, the
        // merged model's are the adapted model's.
        var g = GenerationConfig()
        g.maxNewTokens = 12
        g.eosTokenIds = []
        let prompts: [[Int32]] = [[1, 2, 3], [4, 5]]
        let adaptedTokens = try model.generate(prompts, config: g)
        XCTAssertNotEqual(try model.withAdaptersDisabled { try model.generate(prompts, config: g) }, adaptedTokens)
        try model.mergeAndUnload()
        XCTAssertEqual(try model.generate(prompts, config: g), adaptedTokens)
        XCTAssertNil(model.adapter)
        for (x, y) in zip(model.parameters.array, expected) { XCTAssertEqual(Double(x), y, accuracy: 1e-6) }
        let merged = try model.forward(packed, head: head, keepActivations: false).logps
        for (x, y) in zip(merged, adapted) { XCTAssertEqual(x, y, accuracy: 1e-5) }
        expectDPOError(["no LoRA adapter"]) { try model.mergeAndUnload() }
    }

    /// A LoRA checkpoint holds the adapter and its optimizer state only, and resuming from it
    /// continues bit-identically (dropout on, gradient accumulation mid-way, both reference kinds).
    func testCheckpointResumesBitIdentically() throws {
        for loaded in [false, true] {
            var c = DPOConfig()
            c.optimizer.learningRate = 5e-3
            c.optimizer.gradientAccumulationSteps = 2
            let lora = LoraConfig(r: 4, loraDropout: 0.2, targetModules: [.q, .v, .up])
            func makeTrainer() throws -> DPOTrainer {
                let m = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1)
                if loaded {
                    var l = lora
                    l.initLoraWeights = .random
                    try m.addAdapter(l, seed: 4)
                    return try DPOTrainer(policy: m, config: c)
                }
                return try DPOTrainer(policy: m, config: c, peftConfig: lora)
            }
            let batches = (0..<7).map { PreferenceTask.pairs(4, seed: UInt64(50 + $0)) }
            let straight = try makeTrainer()
            for b in batches { _ = try straight.step(b) }

            let first = try makeTrainer()
            for b in batches.prefix(3) { _ = try first.step(b) }  // one micro-batch pending
            let dir = try makeScratchDirectory() + "/ckpt"
            try first.saveCheckpoint(directory: dir)
            XCTAssertFalse(isDirectory(dir + "/model"), "no base weights in a LoRA checkpoint")
            XCTAssertTrue(fileExists(dir + "/adapter/adapter_model.safetensors"))
            XCTAssertEqual(isDirectory(dir + "/reference_adapter"), loaded)
            let opt = try SafetensorsFile.open(dir + "/optimizer.safetensors")
            XCTAssertEqual(opt.info("exp_avg")?.count, first.policy.adapter!.parameterCount)
            XCTAssertEqual(opt.info("gradients")?.count, first.policy.adapter!.parameterCount)

            let resumed = try makeTrainer()
            try resumed.loadCheckpoint(directory: dir)
            for b in batches.dropFirst(3) { _ = try resumed.step(b) }
            XCTAssertEqual(resumed.policy.adapter!.parameters.array, straight.policy.adapter!.parameters.array, "loaded \(loaded)")
            XCTAssertEqual(resumed.globalStep, straight.globalStep)

            // A full fine-tuning trainer refuses the LoRA checkpoint (and the other way round).
            let full = try DPOTrainer(policy: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1), config: c)
            expectDPOError(["uses reference kind", loaded ? "reference_adapter" : "adapters_disabled"]) {
                try full.loadCheckpoint(directory: dir)
            }
            var p = c
            p.precomputeRefLogProbs = true
            let fullPrecomputed = try DPOTrainer(policy: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1), config: p)
            let loraPrecomputed = try DPOTrainer(policy: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 1),
                                                 config: p, peftConfig: lora)
            let fullDir = try makeScratchDirectory() + "/full"
            try fullPrecomputed.saveCheckpoint(directory: fullDir)
            expectDPOError(["full fine-tuning run"]) { try loraPrecomputed.loadCheckpoint(directory: fullDir) }
        }
    }
}

/// A LoRA DPO run learns the tiny preference task of TrainingTests (SFT'd base, fresh adapter on
/// every linear layer, reference = the base with the adapter off).
final class LoraLearningTests: XCTestCase {
    func run(seed: UInt64, steps: Int = 150) throws -> (before: DPOMetrics, after: DPOMetrics) {
        let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: seed)
        var sc = SFTConfig()
        sc.optimizer.learningRate = 3e-3
        sc.optimizer.lrSchedulerType = .constant
        let sft = try SFTTrainer(model: model, config: sc)
        for s in 0..<60 {
            _ = try sft.step(PreferenceTask.pairs(16, seed: seed &* 1000 &+ UInt64(100 + s)).flatMap {
                [SFTExample(promptIds: $0.promptIds, completionIds: $0.chosenIds),
                 SFTExample(promptIds: $0.promptIds, completionIds: $0.rejectedIds)]
            })
        }
        var c = DPOConfig()
        c.beta = 0.1
        c.optimizer.learningRate = 1e-2
        c.optimizer.lrSchedulerType = .constant
        c.optimizer.seed = seed
        let trainer = try DPOTrainer(policy: model, config: c,
                                     peftConfig: LoraConfig(r: 8, loraAlpha: 16, targetModules: LoraModule.allCases))
        let base = model.parameters.array
        let heldOut = PreferenceTask.pairs(64, seed: 999)
        let before = try trainer.evaluate(heldOut)
        for s in 0..<steps { _ = try trainer.step(PreferenceTask.pairs(16, seed: seed &* 1000 &+ UInt64(500 + s))) }
        XCTAssertEqual(model.parameters.array, base)
        return (before, try trainer.evaluate(heldOut))
    }

    func testLoraDPOLearnsAHeldOutPreference() throws {
        for seed: UInt64 in [1, 2, 3] {
            let (before, after) = try run(seed: seed)
            print("LoRA DPO learning, seed \(seed): held-out accuracy \(before.rewardsAccuracies) -> \(after.rewardsAccuracies), margin \(after.rewardsMargins), loss \(after.loss)")
            XCTAssertEqual(before.rewardsMargins, 0, accuracy: 1e-9, "fresh adapter: the policy is the reference")
            XCTAssertGreaterThanOrEqual(after.rewardsAccuracies, 0.95, "seed \(seed)")
        }
    }
}

/// LoRA with bf16 products and with data-parallel ranks.
final class LoraModesTests: XCTestCase {
    /// bf16: the adapter's products run in bf16 too (log-probs differ from fp32's, slightly), and
    /// the adapter gradients point where fp32's do.
    func testBF16() throws {
        func run(_ bf16: Bool) throws -> (logps: [Float], grads: [Float]) {
            let model = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 3)
            try model.addAdapter(LoraConfig(r: 4, targetModules: LoraModule.allCases, initLoraWeights: .random), seed: 2)
            model.bf16 = bf16
            let (packed, head) = TestModels.batch(vocab: PreferenceTask.vocab)
            let out = try model.forward(packed, head: head, keepActivations: true)
            try model.backward(dlogp: (0..<out.logps.count).map { Float(($0 % 5) - 2) / 4 })
            return (out.logps, model.adapter!.gradients!.array)
        }
        let fp32 = try run(false), bf16 = try run(true)
        let logpDiff = zip(fp32.logps, bf16.logps).map { abs(Double($0) - Double($1)) }.max()!
        XCTAssertGreaterThan(logpDiff, 0)
        XCTAssertLessThan(logpDiff, 0.1)
        var dot = 0.0, n1 = 0.0, n2 = 0.0
        for (a, b) in zip(fp32.grads, bf16.grads) { dot += Double(a) * Double(b); n1 += Double(a * a); n2 += Double(b * b) }
        let cosine = dot / (n1.squareRoot() * n2.squareRoot())
        print("LoRA bf16 vs fp32: max |d logp| \(logpDiff), adapter gradient cosine \(cosine)")
        XCTAssertGreaterThan(cosine, 0.995)
        XCTAssertLessThan(cosine, 1)
    }

    /// Two in-process ranks with a LoRA trainer train what one process with the global batch
    /// trains (the adapter gradients are all-reduced; the base stays untouched on both).
    func testTwoRanksEqualOneProcess() throws {
        let data = DataParallelTests.pairs(8, seed: 3)
        func make() throws -> DPOTrainer {
            var c = DPOConfig()
            c.optimizer.learningRate = 1e-2
            c.optimizer.maxGradNorm = 0.5
            return try DPOTrainer(policy: try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5), config: c,
                                  peftConfig: LoraConfig(r: 4, targetModules: [.q, .v, .down]))
        }
        let single = try make()
        _ = try single.step(data)
        _ = try single.step(data)
        let ranks = try [make(), make()]
        _ = try LocalGroup(size: 2).runRanks { r, c -> Int in
            try ranks[r].setCommunicator(c)
            for _ in 0..<2 { _ = try ranks[r].step(Array(data[(4 * r)..<(4 * r + 4)])) }
            return 0
        }
        let w0 = ranks[0].policy.adapter!.parameters.array, w1 = ranks[1].policy.adapter!.parameters.array
        XCTAssertEqual(w0, w1)
        let ws = single.policy.adapter!.parameters.array
        // The gradients differ by the order of their sums only; AdamW's early steps divide by
        // |g| + eps, which amplifies that rounding for entries whose gradient is near zero, so
        // the bound is on the step (lr = 1e-2 per step), not on the weights' magnitude.
        let diff = zip(w0, ws).map { abs($0 - $1) }.max()!
        print("LoRA data parallel: 2 ranks x 4 vs 1 x 8, max |weight difference| \(diff) (lr 1e-2)")
        XCTAssertLessThanOrEqual(diff, 1e-2 * 1e-2)
        XCTAssertNotEqual(ws, try make().policy.adapter!.parameters.array)
        XCTAssertEqual(ranks[0].policy.parameters.array, try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5).parameters.array)
    }
}
