import Foundation
import XCTest
@testable import DPO

/// The loader and the memory checks refuse, before allocating, what cannot be or should not be
/// allocated: configs that describe a far larger model than the weights file holds, duplicate
/// tensor names, workspaces above the process's memory limit; the workspace's memory estimate is
/// exactly what it allocates.
final class LoaderLimitsTests: XCTestCase {
    /// The issue's 29 KB folder: a config.json that leaves every size at transformers' 7B defaults
    /// beside a tiny weights file. Before the fix the loader sized the 7B model first (allocating it,
    /// or refusing it for memory) instead of checking the weights file against the config.
    func testSmallFolderWithLargeConfigIsRefusedBeforeAllocating() throws {
        let dir = try makeScratchDirectory()
        try writeFileAtomically(dir + "/config.json",
                                bytes: Array(#"{"vocab_size":64,"num_attention_heads":4,"num_key_value_heads":2}"#.utf8))
        let w = [Float](repeating: 0.5, count: 64 * 8)
        try w.withUnsafeBufferPointer {
            try SafetensorsWriter.write(dir + "/model.safetensors",
                                        tensors: [("model.embed_tokens.weight", [64, 8], $0)], metadata: [:])
        }
        expectDPOError(["model.embed_tokens.weight", "has shape [64, 8], the config implies [64, 4096]"]) { _ = try LlamaModel.load(directory: dir) }
    }

    /// A config whose shapes match the file's tensors but whose layer count asks for more tensors
    /// than the file has: refused by count, without building a tensor list of that size.
    func testHugeLayerCountIsRefusedByTensorCount() throws {
        let dir = try makeScratchDirectory()
        try writeFileAtomically(dir + "/config.json", bytes: Array(#"""
            {"vocab_size": 8, "hidden_size": 2, "intermediate_size": 2, "num_hidden_layers": 1000000,
             "num_attention_heads": 1, "num_key_value_heads": 1, "tie_word_embeddings": true}
            """#.utf8))
        let w = [Float](repeating: 0.5, count: 16)
        try w.withUnsafeBufferPointer {
            try SafetensorsWriter.write(dir + "/model.safetensors",
                                        tensors: [("model.embed_tokens.weight", [8, 2], $0)], metadata: [:])
        }
        expectDPOError(["implies 9000002 tensors"]) { _ = try LlamaModel.load(directory: dir) }
    }

    /// Two header entries with one name: "last wins" would hide one tensor; the file is refused.
    func testDuplicateTensorNameInHeaderIsRefused() throws {
        let dir = try makeScratchDirectory()
        let path = dir + "/dup.safetensors"
        let header = #"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes += $0 }
        bytes += Array(header.utf8) + [UInt8](repeating: 0, count: 8)
        try writeFileAtomically(path, bytes: bytes)
        expectDPOError([path, "duplicate key 'w'"]) { _ = try SafetensorsFile.open(path) }
        // config.json keeps Python's json semantics (last wins).
        XCTAssertEqual(try JSON.parse(#"{"a": 1, "a": 2}"#).object?["a"], .number(2))
    }

    /// `WorkspaceSizes` is the one estimate of a workspace's memory: it equals the floats the
    /// workspace allocates, for training and for no-grad workspaces.
    func testWorkspaceEstimateEqualsItsAllocation() throws {
        for config in [TestModels.gqaTied, TestModels.mhaUntiedBias, TestModels.qwen2] {
            for keep in [false, true] {
                let sizes = WorkspaceSizes(config: config, tokens: 37, headRows: 23, scratchCount: 91, keep: keep)
                let w = try Workspace(config: config, sizes: sizes)
                var floats = 0
                for list in [w.residual, w.mid, w.rstd1, w.rstd2, w.lse, w.gate, w.up] { floats += list.reduce(0) { $0 + $1.count } }
                for b in [w.headX, w.headRstd, w.q, w.k, w.v, w.attn, w.normed, w.ropeCos, w.ropeSin, w.scratch, w.logits, w.phase] {
                    floats += b.count
                }
                if keep {
                    let g = try w.backwardBuffers()
                    floats += g.dResidual.count + g.dMid.count + g.dNormed.count
                }
                XCTAssertEqual(Double(floats), sizes.totalFloats, "keep \(keep), \(config)")
            }
        }
    }

    /// A workspace larger than the process may allocate is an out-of-memory error from the
    /// forward, not a trap; the model stays usable with a batch that fits.
    func testForwardBeyondTheMemoryLimitIsOutOfMemory() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        let sizes = WorkspaceSizes(config: model.config, tokens: 1 << 40, headRows: 1, scratchCount: 1, keep: true)
        XCTAssertGreaterThan(sizes.totalFloats * 4, MemoryLimit.availableBytes())
        expectDPOError(["out of memory", "activations of 1099511627776 tokens"]) {
            _ = try Workspace(config: model.config, sizes: sizes)
        }
        let (packed, head) = TestModels.batch(vocab: model.config.vocabSize)
        XCTAssertNoThrow(try model.forward(packed, head: head, keepActivations: true))
    }

    /// Parameters that cannot fit are refused by the engine itself (so every door, the command
    /// line included, gets the same refusal).
    func testModelLargerThanMemoryIsOutOfMemory() {
        let c = LlamaConfig(vocabSize: 1 << 16, hiddenSize: 1 << 11, intermediateSize: 1 << 12, numHiddenLayers: 1 << 16,
                            numAttentionHeads: 16, numKeyValueHeads: 16)
        expectDPOError(["out of memory", "the parameters of this model"]) { _ = try LlamaModel(config: c) }
    }

    /// dpo.h, the Swift module and the Python package state one version.
    func testVersionsAgree() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let header = try String(contentsOf: root.appendingPathComponent("include/dpo.h"), encoding: .utf8)
        XCTAssertTrue(header.contains("#define DPO_VERSION_STRING \"\(swiftDPOVersion)\""))
        let pyproject = try String(contentsOf: root.appendingPathComponent("bindings/python/pyproject.toml"), encoding: .utf8)
        XCTAssertTrue(pyproject.contains("version = \"\(swiftDPOVersion)\""))
    }
}
