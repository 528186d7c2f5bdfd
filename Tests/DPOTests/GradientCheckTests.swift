import XCTest
@testable import DPO

/// The hand-written backward against central finite differences of the naive Double model, for
/// every parameter tensor of tiny configs (tied and untied, GQA and MHA, with and without biases)
/// on a packed batch with sequences of different lengths and a shared prompt.
///
/// Scalar: S = sum_i w_i * logp_i with fixed random weights w (so d S / d logp_i = w_i).
final class GradientCheckTests: XCTestCase {
    func check(_ config: LlamaConfig, batch: (PackedTokens, HeadQuery)? = nil, entriesPerTensor: Int = 6,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try TestModels.model(config)
        let (packed, head) = batch ?? TestModels.batch(vocab: config.vocabSize)
        var rng = Xoshiro256(seed: 11)
        let weights = (0..<head.count).map { _ in Float(rng.nextUniform() * 2 - 1) }
        _ = try model.forward(packed, head: head, keepActivations: true)
        try model.zeroGradients()
        try model.backward(dlogp: weights)
        let grads = model.gradients!.array

        var naive = NaiveLlama(model: model)
        func scalar() -> Double { zip(naive.logps(packed, head), weights).reduce(0) { $0 + $1.0 * Double($1.1) } }
        let h = 1e-5
        for spec in model.layout.tensors {
            let g = Array(grads[spec.offset..<(spec.offset + spec.count)])
            let scale = max(g.map { abs(Double($0)) }.max()!, 1e-3)
            // A few single entries ...
            var entries = Set<Int>()
            while entries.count < min(entriesPerTensor, spec.count) { entries.insert(Int(rng.next() % UInt64(spec.count))) }
            for e in entries {
                let i = spec.offset + e
                let saved = naive.params[i]
                naive.params[i] = saved + h; let up = scalar()
                naive.params[i] = saved - h; let down = scalar()
                naive.params[i] = saved
                let fd = (up - down) / (2 * h)
                XCTAssertEqual(Double(g[e]), fd, accuracy: 1e-3 * scale + 1e-6,
                               "\(spec.name)[\(e)]", file: file, line: line)
            }
            // ... and the directional derivative along a random direction over the whole tensor.
            let dir = (0..<spec.count).map { _ in rng.nextUniform() * 2 - 1 }
            let saved = naive.params
            for j in 0..<spec.count { naive.params[spec.offset + j] += h * dir[j] }
            let up = scalar()
            naive.params = saved
            for j in 0..<spec.count { naive.params[spec.offset + j] -= h * dir[j] }
            let down = scalar()
            naive.params = saved
            let fd = (up - down) / (2 * h)
            let analytic = zip(g, dir).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            XCTAssertEqual(analytic, fd, accuracy: 1e-3 * max(abs(fd), scale), "\(spec.name) directional",
                           file: file, line: line)
        }
    }

    func testGQATied() throws { try check(TestModels.gqaTied) }

    /// Sequences longer than the attention's row blocks (64): a 150-token sequence (3 blocks) and a
    /// 70-token prompt shared by children of 80 and 66 tokens (2 blocks each, every block also
    /// attending to the prompt), so the blocked attention and its parallel tasks are on the path.
    func testSequencesLongerThanTheAttentionRowBlock() throws {
        let config = TestModels.gqaTied
        var rng = Xoshiro256(seed: 21)
        func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) } }
        var packed = PackedTokens(sequences: [tokens(150), tokens(70)])
        for n in [80, 66] {
            packed.segments.append(.init(start: packed.count, count: n, parent: 1))
            packed.tokens += tokens(n); packed.positions += (0..<n).map { Int32(70 + $0) }
        }
        XCTAssertGreaterThan(150, 2 * attentionRowBlock)
        // Every row predicts a random label.
        let rows = (0..<packed.count).map(Int32.init)
        try check(config, batch: (packed, HeadQuery(rows: rows, labels: tokens(rows.count))), entriesPerTensor: 2)
    }
    func testMHAUntiedBiasLlama3() throws { try check(TestModels.mhaUntiedBias) }
    func testQwen2() throws { try check(TestModels.qwen2) }

    /// Two backwards without zeroing add up (micro-batch accumulation).
    func testGradientsAccumulate() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let (packed, head) = TestModels.batch(vocab: 24)
        let w = [Float](repeating: 0.5, count: head.count)
        _ = try model.forward(packed, head: head, keepActivations: true)
        try model.zeroGradients()
        try model.backward(dlogp: w)
        let once = model.gradients!.array
        _ = try model.forward(packed, head: head, keepActivations: true)
        try model.backward(dlogp: w)
        let twice = model.gradients!.array
        for i in stride(from: 0, to: once.count, by: 7) { XCTAssertEqual(twice[i], 2 * once[i], accuracy: 1e-5 + 1e-5 * abs(once[i])) }
    }
}
