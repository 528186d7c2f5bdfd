import XCTest
@testable import DPO

/// The packed forward against the naive Double model: every kernel on the path (embedding, RMSNorm,
/// projections, RoPE, grouped-query attention with packing and shared prompts, SwiGLU, chunked head).
final class ModelForwardTests: XCTestCase {
    func checkForward(_ config: LlamaConfig) throws {
        let model = try TestModels.model(config)
        let (packed, head) = TestModels.batch(vocab: config.vocabSize)
        let out = try model.forward(packed, head: head, keepActivations: false)
        let naive = NaiveLlama(model: model)
        let expected = naive.logps(packed, head)
        for i in 0..<head.count {
            XCTAssertEqual(Double(out.logps[i]), expected[i], accuracy: 1e-4, "row \(i)")
        }
        // Head statistics of one row against the definitions.
        let row = 6
        let z = naive.logits(packed, row: Int(head.rows[row]))
        let m = z.max()!
        let lse = m + log(z.reduce(0) { $0 + exp($1 - m) })
        let p = z.map { exp($0 - lse) }
        let entropy = -zip(p, z).reduce(0) { $0 + $1.0 * ($1.1 - lse) }
        XCTAssertEqual(Double(out.entropy[row]), entropy, accuracy: 1e-4)
        XCTAssertEqual(Double(out.meanLogit[row]), z.reduce(0, +) / Double(z.count), accuracy: 1e-4)
        XCTAssertEqual(Double(out.logSumP2[row]), log(p.reduce(0) { $0 + $1 * $1 }), accuracy: 1e-4)
        let argmax = z.firstIndex(of: m)!
        XCTAssertEqual(out.argmaxHit[row], argmax == Int(head.labels[row]) ? 1 : 0)
    }

    func testGQATied() throws { try checkForward(TestModels.gqaTied) }
    func testMHAUntiedBiasLlama3() throws { try checkForward(TestModels.mhaUntiedBias) }
    func testQwen2() throws { try checkForward(TestModels.qwen2) }

    /// A shared prompt gives the same log-probs as running each child with its own prompt copy.
    func testSharedPromptEqualsSeparateSequences() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let prompt: [Int32] = [3, 9, 1, 4], a: [Int32] = [5, 7, 2], b: [Int32] = [8, 8, 6, 0, 11]
        var shared = PackedTokens(sequences: [prompt])
        for child in [a, b] {
            shared.segments.append(.init(start: shared.count, count: child.count, parent: 0))
            shared.tokens += child
            shared.positions += (0..<child.count).map { Int32(prompt.count + $0) }
        }
        // Prompt row 3 predicts a[0]; a's rows 4, 5 predict a[1], a[2]; b's rows 7...10 predict
        // b[1]...b[4] (b[0] would need prompt row 3 again, and rows are unique).
        let sharedHead = HeadQuery(rows: [3, 4, 5, 7, 8, 9, 10], labels: [a[0], a[1], a[2], b[1], b[2], b[3], b[4]])
        let separate = PackedTokens(sequences: [prompt + a, prompt + b])
        let sepHead = HeadQuery(rows: [3, 4, 5, 7 + 4, 7 + 5, 7 + 6, 7 + 7], labels: sharedHead.labels)
        let s = try model.forward(separate, head: sepHead, keepActivations: false)
        let sh = try model.forward(shared, head: sharedHead, keepActivations: false)
        for i in 0..<sharedHead.count { XCTAssertEqual(sh.logps[i], s.logps[i], accuracy: 1e-5, "row \(i)") }
    }

    func testRejectsBadInput() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let ok = PackedTokens(sequences: [[1, 2, 3]])
        XCTAssertThrowsError(try model.forward(PackedTokens(sequences: [[1, 99]]), head: HeadQuery(rows: [0], labels: [1]), keepActivations: false)) {
            XCTAssertTrue("\($0)".contains("token id 99"), "\($0)")
        }
        XCTAssertThrowsError(try model.forward(ok, head: HeadQuery(rows: [3], labels: [1]), keepActivations: false))
        XCTAssertThrowsError(try model.forward(ok, head: HeadQuery(rows: [0], labels: [-1]), keepActivations: false))
        var badSeg = ok; badSeg.segments[0].count = 2
        XCTAssertThrowsError(try model.forward(badSeg, head: HeadQuery(rows: [0], labels: [1]), keepActivations: false))
        XCTAssertThrowsError(try model.backward(dlogp: [1])) { XCTAssertTrue("\($0)".contains("wrong state"), "\($0)") }
        // Still usable afterwards.
        XCTAssertNoThrow(try model.forward(ok, head: HeadQuery(rows: [0], labels: [1]), keepActivations: true))
        XCTAssertThrowsError(try model.backward(dlogp: [.nan]))
    }
}
