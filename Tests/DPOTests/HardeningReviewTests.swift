import Foundation
import XCTest
@testable import DPO

/// Regressions of a hostile review of the hardening: state shared by two trainers of one model,
/// sizes that allocate before any check, saves whose target names are folders, cleanup that
/// removed folders of the user's, saves through a symbolic link.
final class HardeningReviewTests: XCTestCase {
    /// Trainer B's step on A's model used to zero the gradients A had accumulated (even when B's
    /// step then failed). Now B is refused while A holds micro-batches, and A's are intact.
    func testASecondTrainerCannotOverwriteAccumulatedGradients() throws {
        let model = try TestModels.model(TestModels.gqaTied)
        var ca = DPOConfig(); ca.optimizer.learningRate = 1e-3; ca.optimizer.gradientAccumulationSteps = 2
        let a = try DPOTrainer(policy: model, reference: nil, config: ca)
        let b = try DPOTrainer(policy: model, reference: nil, config: DPOConfig())
        let pairs = CheckpointSaveAtomicityTests.pairs(seed: 1)
        _ = try a.accumulate(pairs)
        let held = model.gradients!.array
        XCTAssertTrue(held.contains { $0 != 0 })
        expectDPOError(["wrong state", "another trainer's accumulated micro-batches"]) { _ = try b.step(pairs) }
        XCTAssertEqual(model.gradients!.array, held, "A's accumulated gradients were changed")
        XCTAssertEqual(a.pendingMicroBatches, 1)
        _ = try a.step(pairs)  // A completes its accumulation; then B may train
        XCTAssertEqual(a.pendingMicroBatches, 0)
        XCTAssertNoThrow(try b.step(pairs))
    }

    /// head_dim 2^30 used to make config validation compute 2^29 rotary frequencies (2 GiB) before
    /// any size check; every size field is now bounded by the engine itself, for every door.
    func testSizeFieldsAreBoundedByTheEngine() {
        var c = LlamaConfig(vocabSize: 4, hiddenSize: 1, intermediateSize: 2, numHiddenLayers: 1,
                            numAttentionHeads: 1, numKeyValueHeads: 1, headDim: 1 << 30)
        expectDPOError(["head_dim = 1073741824", "supported maximum 1048576"]) { try c.validate() }
        c.headDim = 2; c.hiddenSize = 1 << 21
        expectDPOError(["hidden_size = 2097152"]) { try c.validate() }
    }

    /// A model save into a folder where `model.safetensors` (or `config.json`) is a folder used to
    /// return OK with nothing replaced; it is refused before its commit point, changing nothing.
    func testSaveOverAFolderNamedLikeAFileIsRefused() throws {
        let root = try makeScratchDirectory()
        let dir = root + "/g"
        try FileManager.default.createDirectory(atPath: dir + "/model.safetensors/sub", withIntermediateDirectories: true)
        try writeFileAtomically(dir + "/config.json", bytes: Array("{}".utf8))
        let model = try TestModels.model(TestModels.gqaTied)
        expectDPOError(["'model.safetensors' there is a directory"]) { try model.save(directory: dir) }
        XCTAssertEqual(try readFile(dir + "/config.json"), Array("{}".utf8))
        XCTAssertTrue(isDirectory(dir + "/model.safetensors/sub"))
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasPrefix(".swift-dpo-save-") })
    }

    /// Cleanup after killed saves removes only names swift-dpo's saves create: a user's
    /// `.ck.old-mybackup` or `.model.tmp-notes` used to be deleted by a load or save.
    func testCleanupKeepsFoldersThatOnlyLookLikeLeftovers() throws {
        let root = try makeScratchDirectory()
        for name in [".ck.old-mybackup", ".ck.tmp-notes", ".model.tmp-notes", ".ck.old-1-2"] {
            try FileManager.default.createDirectory(atPath: root + "/" + name, withIntermediateDirectories: true)
            try writeFileAtomically(root + "/" + name + "/keep.txt", bytes: [1])
        }
        let model = try TestModels.model(TestModels.gqaTied)
        let t = try DPOTrainer(policy: model, reference: nil, config: DPOConfig())
        XCTAssertThrowsError(try t.loadCheckpoint(directory: root + "/ck"))
        try t.saveCheckpoint(directory: root + "/ck")
        try model.save(directory: root + "/model")
        for name in [".ck.old-mybackup", ".ck.tmp-notes", ".model.tmp-notes", ".ck.old-1-2"] {
            XCTAssertTrue(fileExists(root + "/" + name + "/keep.txt"), name)
        }
        XCTAssertTrue(isUniqueName(".ck.tmp-" + uniqueSuffix(), prefix: ".ck.tmp-"))
    }

    /// Saves through a symbolic link and saves to the linked folder lock and stage in one folder:
    /// interleaved from two threads they never fail on each other's staging folders.
    func testSavesThroughALinkAndToItsTargetDoNotInterfere() throws {
        let root = try makeScratchDirectory()
        try FileManager.default.createDirectory(atPath: root + "/A", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/B", withIntermediateDirectories: true)
        let x = try TestModels.model(TestModels.gqaTied, seed: 1), y = try TestModels.model(TestModels.gqaTied, seed: 2)
        try x.save(directory: root + "/B/m")
        try FileManager.default.createSymbolicLink(atPath: root + "/A/link", withDestinationPath: "../B/m")
        let lock = NSLock()
        var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            for _ in 0..<15 {
                do { try (i == 0 ? x : y).save(directory: i == 0 ? root + "/A/link" : root + "/B/m") } catch {
                    lock.lock(); failures.append("\(error)"); lock.unlock()
                }
            }
        }
        XCTAssertEqual(failures, [])
        let loaded = try LlamaModel.load(directory: root + "/A/link")
        let bits = loaded.parameters.array
        XCTAssertTrue(bits == x.parameters.array || bits == y.parameters.array, "a mixed model")
    }
}

/// Regressions of a second hostile review: the shared gradient buffer through checkpoint loads and
/// apply_optimizer, and optimizer tensors whose declared size is read before it is checked.
final class HardeningSecondReviewTests: XCTestCase {
    /// An SFT trainer's checkpoint load, or its apply_optimizer, used to zero or use the gradients
    /// a DPO trainer of the same model had accumulated. Both are now refused while the DPO trainer
    /// holds them, and the gradients stay as they were.
    func testCheckpointLoadAndApplyOptimizerRespectTheGradientHolder() throws {
        let root = try makeScratchDirectory()
        let model = try TestModels.model(TestModels.gqaTied)
        var dc = DPOConfig(); dc.optimizer.gradientAccumulationSteps = 4
        let d = try DPOTrainer(policy: model, reference: nil, config: dc)
        var sc = SFTConfig(); sc.optimizer.gradientAccumulationSteps = 4
        let s = try SFTTrainer(model: model, config: sc)
        try s.saveCheckpoint(directory: root + "/sft")
        _ = try d.accumulate(CheckpointSaveAtomicityTests.pairs(seed: 2))
        let held = model.gradients!.array
        XCTAssertThrowsError(try s.loadCheckpoint(directory: root + "/sft")) { e in
            XCTAssertTrue("\(e)".contains("another trainer's accumulated micro-batches"), "\(e)")
        }
        XCTAssertThrowsError(try s.applyOptimizer()) { e in XCTAssertTrue("\(e)".contains("wrong state"), "\(e)") }
        XCTAssertEqual(model.gradients!.array, held)
        XCTAssertEqual(d.pendingMicroBatches, 1)
    }

    /// An optimizer tensor declaring 300M entries in a 4 KB sparse file used to be read whole (1.2 GB,
    /// or an abort under ulimit -v) before its size was compared with the model's.
    func testOptimizerTensorSizeIsCheckedBeforeReading() throws {
        let root = try makeScratchDirectory()
        let model = try TestModels.model(TestModels.gqaTied)
        let t = try SFTTrainer(model: model, config: SFTConfig())
        let dir = root + "/ck"
        try t.saveCheckpoint(directory: dir)
        let header = #"{"exp_avg":{"dtype":"F32","shape":[300000000],"data_offsets":[0,1200000000]},"exp_avg_sq":{"dtype":"F32","shape":[1],"data_offsets":[1200000000,1200000004]}}"#
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes += $0 }
        bytes += Array(header.utf8)
        let path = dir + "/optimizer.safetensors"
        try writeFileAtomically(path, bytes: bytes)
        XCTAssertEqual(truncate(path, off_t(bytes.count + 1_200_000_004)), 0)  // sparse: no disk used
        try writeManifest(dir)
        XCTAssertThrowsError(try t.loadCheckpoint(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("'exp_avg' has 300000000 entries"), "\(e)")
        }
    }
}
