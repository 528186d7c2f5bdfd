import XCTest
@testable import DPO

/// LoRA on a quantized GGUF base (`LlamaModel.load(ggufFile:keepBaseQuantized:)`, QuantizedBase.swift):
/// the fp32 buffer leaves the linear weights out; forwards, LoRA gradients and input gradients
/// equal the fp32 model's bit for bit when that model's frozen products use the same tiles, and
/// within rounding with its one-sgemm products; finite differences of the quantized model itself
/// confirm its gradients through every quantized layer; what needs fp32 weights is refused.
final class QuantizedBaseTests: XCTestCase {
    static let fixtures = TestModels.fixturesDirectory() + "/gguf/models"
    static let lora = LoraConfig(r: 3, loraAlpha: 6, targetModules: LoraModule.allCases, initLoraWeights: .random)

    /// The forward's log-probs, and the adapter's gradients of S = sum_i w_i logp_i.
    func logpsAndGradients(_ model: LlamaModel, _ packed: PackedTokens, _ head: HeadQuery) throws -> ([Float], [Float]) {
        let out = try model.forward(packed, head: head, keepActivations: true)
        try model.zeroGradients()
        try model.backward(dlogp: (0..<head.count).map { Float(($0 % 7) - 3) / 3 })
        return (out.logps, try XCTUnwrap(model.adapter?.gradients).array)
    }

    func checkEqualsFP32(_ name: String, quantizedType: GGMLType?, dropout: Double) throws {
        let path = QuantizedBaseTests.fixtures + "/" + name
        let q = try LlamaModel.load(ggufFile: path, keepBaseQuantized: true)
        let tiled = try LlamaModel.load(ggufFile: path), plain = try LlamaModel.load(ggufFile: path)
        tiled.tiledFrozenProducts = true
        let c = q.config
        // The layout leaves the matrices out (seven per layer, the embedding, an untied head), and only them.
        XCTAssertTrue(q.layout.omitsMatrices)
        XCTAssertEqual(q.layout.tensors.count, tiled.layout.tensors.count - 7 * c.numHiddenLayers - (c.tieWordEmbeddings ? 1 : 2), name)
        XCTAssertEqual([q.layout.embed, q.layout.lmHead], [-1, -1])
        XCTAssertTrue(q.layout.tensors.allSatisfy { $0.shape.count == 1 })
        XCTAssertEqual(Double(q.layout.count), ParameterLayout.parameterCount(c, omitMatrices: true))
        XCTAssertEqual(q.layout.tensors.count, ParameterLayout.tensorCount(c, omitMatrices: true))
        XCTAssertNil(q.parameter("model.layers.0.self_attn.q_proj.weight"))
        XCTAssertTrue(q.layout.layers.allSatisfy { [$0.q, $0.k, $0.v, $0.o, $0.gate, $0.up, $0.down].allSatisfy { $0 == -1 } })
        let base = try XCTUnwrap(q.quantizedBase)
        let matrices = tiled.layout.tensors.filter { $0.shape.count == 2 }
        XCTAssertEqual(base.fp32ByteCount, 4 * matrices.reduce(0) { $0 + $1.count })
        XCTAssertTrue(c.tieWordEmbeddings ? base.lmHead === base.embedding : base.lmHead !== base.embedding)
        XCTAssertEqual(4 * q.layout.count + base.fp32ByteCount, 4 * tiled.parameterCount)
        XCTAssertEqual(q.parameterCount, tiled.parameterCount)  // the model's count, matrices included
        if let t = quantizedType { XCTAssertTrue(base.matrices.joined().allSatisfy { $0.type == t }, name) }
        for spec in q.layout.tensors {  // the rest equals the fp32 model's
            XCTAssertEqual(Array(try XCTUnwrap(q.parameter(spec.name))), Array(try XCTUnwrap(tiled.parameter(spec.name))), spec.name)
        }

        var lora = QuantizedBaseTests.lora
        lora.loraDropout = dropout
        for m in [q, tiled, plain] { try m.addAdapter(lora, seed: 9) }
        let (packed, head) = TestModels.batch(vocab: c.vocabSize)
        let (qLogps, qGrads) = try logpsAndGradients(q, packed, head)
        let (tLogps, tGrads) = try logpsAndGradients(tiled, packed, head)
        let (pLogps, pGrads) = try logpsAndGradients(plain, packed, head)
        XCTAssertEqual(qLogps.map(\.bitPattern), tLogps.map(\.bitPattern), "\(name): log-probs, same tiles")
        XCTAssertEqual(qGrads.map(\.bitPattern), tGrads.map(\.bitPattern), "\(name): LoRA gradients, same tiles")
        XCTAssertTrue(qGrads.contains { $0 != 0 } && qGrads.allSatisfy(\.isFinite))
        // Against one sgemm per product: equal up to the order of each dot product's sums.
        for (a, b) in zip(qLogps, pLogps) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(b)), "\(name): log-probs") }
        let gScale = pGrads.map { abs($0) }.max() ?? 1
        for (i, (a, b)) in zip(qGrads, pGrads).enumerated() {
            XCTAssertEqual(a, b, accuracy: 1e-5 * gScale, "\(name): LoRA gradient \(i)")
        }
        // Adapters off: the quantized base alone equals the fp32 base.
        let off = try q.withAdaptersDisabled { try q.forward(packed, head: head, keepActivations: false) }
        let offRef = try tiled.withAdaptersDisabled { try tiled.forward(packed, head: head, keepActivations: false) }
        XCTAssertEqual(off.logps.map(\.bitPattern), offRef.logps.map(\.bitPattern), "\(name): base log-probs")
        // KV-cached generation (prefill and single-token steps) runs the quantized base too.
        var g = GenerationConfig()
        g.maxNewTokens = 8
        g.eosTokenIds = []
        let prompts: [[Int32]] = [[1, 2, 3], [4, 5]]
        let tokens = try q.generate(prompts, config: g)
        XCTAssertEqual(tokens, try tiled.generate(prompts, config: g), "\(name): greedy tokens")
        XCTAssertEqual(try q.withAdaptersDisabled { try q.generate(prompts, config: g) },
                       try tiled.withAdaptersDisabled { try tiled.generate(prompts, config: g) }, "\(name): base's greedy tokens")
    }

    func testLlamaQ8EqualsTheFP32Model() throws {
        try checkEqualsFP32("llama_gqa_q8.gguf", quantizedType: .Q8_0, dropout: 0)
    }

    func testWithDropoutUntiedAndQwen2() throws {
        try checkEqualsFP32("llama_gqa_q8.gguf", quantizedType: .Q8_0, dropout: 0.2)
        try checkEqualsFP32("llama_gqa_untied.gguf", quantizedType: nil, dropout: 0)
        try checkEqualsFP32("qwen2_tied_bias.gguf", quantizedType: nil, dropout: 0)
    }

    /// d S / d A and d S / d B of the quantized model against central differences of its own
    /// forward (directional, per adapter tensor): the gradient of a layer-0 adapter reaches it
    /// through the input gradients of every quantized linear layer above it.
    func testFiniteDifferencesThroughTheQuantizedBase() throws {
        let q = try LlamaModel.load(ggufFile: QuantizedBaseTests.fixtures + "/llama_gqa_q8.gguf", keepBaseQuantized: true)
        try q.addAdapter(QuantizedBaseTests.lora, seed: 9)
        let (packed, head) = TestModels.batch(vocab: q.config.vocabSize)
        let w = (0..<head.count).map { Float(($0 % 7) - 3) / 3 }
        _ = try q.forward(packed, head: head, keepActivations: true)
        try q.zeroGradients()
        try q.backward(dlogp: w)
        let adapter = try XCTUnwrap(q.adapter)
        let grads = try XCTUnwrap(adapter.gradients).array
        let p = adapter.parameters.pointer
        func scalar() throws -> Double {
            let out = try q.forward(packed, head: head, keepActivations: false)
            return zip(out.logps, w).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var rng = Xoshiro256(seed: 4)
        var worst = 0.0
        for spec in adapter.tensors {
            // Along the gradient (largest signal against the fp32 forward's rounding) plus noise
            // (a gradient wrong in direction or size fails either way).
            let g = grads[spec.offset..<(spec.offset + spec.count)], gMax = max(g.map { abs($0) }.max() ?? 0, 1e-12)
            let dir = g.map { $0 / gMax + 0.3 * Float(rng.nextUniform() * 2 - 1) }
            let saved = Array(UnsafeBufferPointer(start: p + spec.offset, count: spec.count))
            /// The central difference with step h along dir.
            func central(_ h: Float) throws -> Double {
                for j in 0..<spec.count { p[spec.offset + j] = saved[j] + h * dir[j] }
                let up = try scalar()
                for j in 0..<spec.count { p[spec.offset + j] = saved[j] - h * dir[j] }
                let down = try scalar()
                for j in 0..<spec.count { p[spec.offset + j] = saved[j] }
                return (up - down) / (2 * Double(h))
            }
            // Richardson's extrapolation cancels the h^2 term (the forward is fp32, so h cannot be tiny).
            let fd = (4 * (try central(2e-3)) - (try central(4e-3))) / 3
            let analytic = (0..<spec.count).reduce(0.0) { $0 + Double(grads[spec.offset + $1]) * Double(dir[$1]) }
            worst = max(worst, abs(analytic - fd) / max(abs(fd), 0.05))
            XCTAssertEqual(analytic, fd, accuracy: 2e-3 * max(abs(fd), 0.05), "\(spec.name) directional")
        }
        print("quantized base: worst relative error of the directional derivatives \(worst)")
    }

    /// One quantized linear layer with an adapter: dx = dy W + s (dy B) A against central
    /// differences of f(x) = sum dy * y(x) in Double, W the dequantized matrix.
    func testInputGradientOfAQuantizedLoraLinear() throws {
        let rows = 3, inF = 64, outF = 5, r = 2
        var rng = Xoshiro256(seed: 8)
        func rand(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextUniform() * 2 - 1) } }
        // A Q8_0 matrix: per 32-value block an fp16 scale then 32 int8.
        var bytes: [UInt8] = []
        for _ in 0..<(outF * inF / 32) {
            bytes += [0x00, 0x2C]  // 0.0625 as fp16 (0x2C00, little-endian)
            bytes += (0..<32).map { _ in UInt8(truncatingIfNeeded: Int8(Int(rng.next() % 255) - 127)) }
        }
        let q = try bytes.withUnsafeBytes { try QuantizedMatrix(type: .Q8_0, outFeatures: outF, inFeatures: inF, bytes: $0) }
        var wq = [Float](repeating: 0, count: outF * inF)
        try wq.withUnsafeMutableBufferPointer { try q.dequantize(rows: 0..<outF, into: $0) }
        XCTAssertTrue(wq.contains { $0 != 0 })
        let x = rand(rows * inF), a = rand(r * inF), b = rand(outF * r), dy = rand(rows * outF)
        let scale: Float = 0.8
        let scratch = try LoraScratch(tokens: rows, rank: r, maxIn: inF, dropout: false)
        var dx = [Float](repeating: 0, count: rows * inF)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                let ll = LoraLinear(a: a.baseAddress!, b: b.baseAddress!, rank: r, inFeatures: inF, outFeatures: outF,
                                    scale: scale, scratch: scratch, dropout: nil, bf16: false)
                frozenLinearInputGradient(&dx, dy, weight: .quantized(q), rows: rows, inFeatures: inF, outFeatures: outF,
                                          accumulate: false, bf16: false)
                dy.withUnsafeBufferPointer { ll.addInputGradient(&dx, dy: $0.baseAddress!, rows: rows) }
            }
        }
        func f(_ x: [Double]) -> Double {
            var total = 0.0
            for t in 0..<rows {
                let u = (0..<r).map { k in (0..<inF).reduce(0.0) { $0 + Double(a[k * inF + $1]) * x[t * inF + $1] } }
                for o in 0..<outF {
                    var v = (0..<inF).reduce(0.0) { $0 + Double(wq[o * inF + $1]) * x[t * inF + $1] }
                    v += Double(scale) * (0..<r).reduce(0.0) { $0 + Double(b[o * r + $1]) * u[$1] }
                    total += Double(dy[t * outF + o]) * v
                }
            }
            return total
        }
        let xd = x.map(Double.init), hh = 1e-6
        for i in 0..<(rows * inF) {
            var up = xd, down = xd
            up[i] += hh; down[i] -= hh
            XCTAssertEqual(Double(dx[i]), (f(up) - f(down)) / (2 * hh), accuracy: 1e-4, "dx[\(i)]")
        }
    }

    /// What needs the fp32 linear weights is refused by name; an adapter still saves.
    func testRefusals() throws {
        let path = QuantizedBaseTests.fixtures + "/llama_gqa_q8.gguf"
        let q = try LlamaModel.load(ggufFile: path, keepBaseQuantized: true)
        let (packed, head) = TestModels.batch(vocab: q.config.vocabSize)
        expectDPOError(["full fine-tuning", "keep_base_quantized"]) { try q.zeroGradients() }
        _ = try q.forward(packed, head: head, keepActivations: true)  // the base alone runs
        expectDPOError(["full fine-tuning", "keep_base_quantized"]) { try q.backward(dlogp: [Float](repeating: 1, count: head.count)) }
        XCTAssertNil(q.gradients)
        expectDPOError(["DPO without a LoRA adapter", "keep_base_quantized"]) { _ = try DPOTrainer(policy: q, config: DPOConfig()) }
        expectDPOError(["SFT without a LoRA adapter", "keep_base_quantized"]) { _ = try SFTTrainer(model: q, config: SFTConfig()) }
        let dir = try makeScratchDirectory()
        expectDPOError(["saving the model", "keep_base_quantized"]) { try q.save(directory: dir + "/model") }
        expectDPOError(["save_gguf", "keep_base_quantized"]) { try q.saveGGUF(path: dir + "/m.gguf", type: .f32) }
        try q.addAdapter(QuantizedBaseTests.lora, seed: 1)
        expectDPOError(["merge_and_unload", "keep_base_quantized"]) { try q.mergeAndUnload() }
        XCTAssertNotNil(q.adapter, "a refused merge leaves the adapter")
        try q.save(directory: dir + "/adapter")  // the adapter files only
        let loaded = try LoraAdapter.load(directory: dir + "/adapter", model: q.config)
        XCTAssertEqual(loaded.parameters.array, q.adapter!.parameters.array)
        // Dequantized: the fp32 model load(ggufFile:) builds, with a copy of the adapter; it merges and saves.
        let d = try q.dequantized()
        XCTAssertNil(d.quantizedBase)
        let fp32 = try LlamaModel.load(ggufFile: path)
        XCTAssertEqual(d.parameters.array, fp32.parameters.array)
        XCTAssertEqual(try XCTUnwrap(d.adapter).parameters.array, q.adapter!.parameters.array)
        XCTAssertFalse(d.adapter === q.adapter)
        d.tiledFrozenProducts = true
        let adapted = try q.forward(packed, head: head, keepActivations: false).logps
        XCTAssertEqual(try d.forward(packed, head: head, keepActivations: false).logps.map(\.bitPattern), adapted.map(\.bitPattern))
        try d.mergeAndUnload()
        let merged = try d.forward(packed, head: head, keepActivations: false).logps
        for (a, b) in zip(merged, adapted) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(b)), "merged") }
        try d.saveGGUF(path: dir + "/merged.gguf", type: .f32)
        XCTAssertEqual(try LlamaModel.load(ggufFile: dir + "/merged.gguf").parameters.array, d.parameters.array)
        // By path: a GGUF file or a directory of one; a Hugging Face directory is refused.
        XCTAssertNotNil(try LlamaModel.load(path: path, keepBaseQuantized: true).quantizedBase)
        XCTAssertNil(try LlamaModel.load(path: path, keepBaseQuantized: false).quantizedBase)
        try fp32.save(directory: dir + "/hf")
        expectDPOError(["keep_base_quantized", "Hugging Face model directory"]) {
            _ = try LlamaModel.load(path: dir + "/hf", keepBaseQuantized: true)
        }
        // A DPO trainer with a LoRA adapter takes the quantized base.
        let trainer = try DPOTrainer(policy: try LlamaModel.load(ggufFile: path, keepBaseQuantized: true), config: DPOConfig(),
                                     peftConfig: LoraConfig(r: 2))
        XCTAssertEqual(trainer.referenceKind, .adaptersDisabled)
    }

    // MARK: SmolLM2-135M-Instruct Q4_1

    /// The real model kept quantized: its 210 linear weights Q4_1 outside the buffer, resident
    /// memory growing by about the quantized bytes plus the fp32 rest (the Q8_0 embedding as fp32,
    /// norms), and a LoRA forward and backward bit-identical to the fp32 model's with the same tiles.
    func testSmolLM2KeptQuantized() throws {
        let path = try TestModels.smolLM2GGUF()
        let before = try QuantizedMatrixTests.residentBytes()
        let q = try LlamaModel.load(ggufFile: path, keepBaseQuantized: true)
        let grown = try QuantizedMatrixTests.residentBytes() - before
        let base = try XCTUnwrap(q.quantizedBase)
        let linear = base.matrices.joined().reduce(0) { $0 + $1.byteCount }
        print("SmolLM2 kept quantized: fp32 buffer \(4 * q.layout.count) bytes, quantized matrices \(base.byteCount) bytes (\(base.fp32ByteCount) as fp32; linear weights \(linear) bytes Q4_1, tied embedding \(base.embedding.byteCount) bytes \(base.embedding.type.name)); resident memory grew by \(grown) bytes loading the model")
        XCTAssertEqual(base.matrices.count, 30)
        XCTAssertTrue(base.matrices.joined().allSatisfy { $0.type == .Q4_1 })
        XCTAssertEqual(linear * 32 / 5, base.matrices.joined().reduce(0) { $0 + $1.fp32ByteCount })  // 20 bytes per 32 weights vs 128
        XCTAssertEqual(base.embedding.type, .Q8_0)
        XCTAssertTrue(base.lmHead === base.embedding)
        XCTAssertLessThan(grown, 4 * q.layout.count + base.byteCount + (32 << 20))  // fp32: 538 MB

        let f = try LlamaModel.load(ggufFile: path)
        f.tiledFrozenProducts = true
        XCTAssertEqual(4 * q.layout.count + base.fp32ByteCount, 4 * f.parameterCount)
        let lora = LoraConfig(r: 4, loraAlpha: 8, targetModules: LoraModule.allCases, initLoraWeights: .random)
        for m in [q, f] { try m.addAdapter(lora, seed: 3) }
        let (packed, head) = TestModels.batch(vocab: q.config.vocabSize)
        let (qLogps, qGrads) = try logpsAndGradients(q, packed, head)
        let (fLogps, fGrads) = try logpsAndGradients(f, packed, head)
        XCTAssertEqual(qLogps.map(\.bitPattern), fLogps.map(\.bitPattern), "log-probs")
        XCTAssertEqual(qGrads.map(\.bitPattern), fGrads.map(\.bitPattern), "LoRA gradients")
        XCTAssertTrue(qLogps.allSatisfy(\.isFinite) && qGrads.contains { $0 != 0 })
    }

    /// With DPO_QBASE_BENCH=1 (run one case per process: peak memory is the process's): a LoRA
    /// DPO step on SmolLM2-135M-Instruct Q4_1 as `dpo bench --lora` takes it (r 16, alpha 32, all
    /// linear layers, 2 pairs of 128 prompt + 2 x 128 completion tokens, the reference = the base
    /// with the adapter off), the base kept quantized, or fp32 with DPO_QBASE_FP32=1. Prints the
    /// resident memory after loading, the peak (VmHWM) after the steps, and the median step time.
    func testBenchmarkLoraStep() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["DPO_QBASE_BENCH"] == "1" else { throw XCTSkip("set DPO_QBASE_BENCH=1 to run the benchmark") }
        Threads.setCount(Threads.count)
        let quantized = env["DPO_QBASE_FP32"] != "1"
        let policy = try LlamaModel.load(ggufFile: try TestModels.smolLM2GGUF(), keepBaseQuantized: quantized)
        let loaded = try QuantizedMatrixTests.residentBytes()
        var c = DPOConfig()
        c.maxLength = nil
        c.optimizer.learningRate = 1e-7
        let trainer = try DPOTrainer(policy: policy, config: c,
                                     peftConfig: LoraConfig(r: 16, loraAlpha: 32, targetModules: LoraModule.allCases))
        var rng = Xoshiro256(seed: 7)
        func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(policy.config.vocabSize)) } }
        let batch = (0..<2).map { _ in PreferencePair(promptIds: tokens(128), chosenIds: tokens(128), rejectedIds: tokens(128)) }
        var times: [Double] = []
        for i in 0..<4 {
            let t0 = Date()
            _ = try trainer.step(batch)
            if i > 0 { times.append(Date().timeIntervalSince(t0)) }
        }
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.map(String.init) ?? "?"
        print("LoRA DPO step, SmolLM2 Q4_1 base \(quantized ? "kept quantized" : "dequantized to fp32"): resident after load \(loaded >> 20) MiB, peak \(hwm), step \(times.sorted()[times.count / 2]) s (median of \(times.count)), threads \(Threads.count)")
    }
}
