import Foundation
import XCTest
@testable import DPO

/// Model saves are all-or-nothing: a save killed (SIGKILL, in a child process) or failing at
/// every one of its file system steps in turn leaves, once reloaded, exactly the old model or
/// exactly the new one, never a mixed pair of files; the next save cleans up what the kill left.
/// Two saves to one path at once never mix.
final class ModelSaveAtomicityTests: SaveTestCase {
    // MARK: - Model saves

    /// The old and the new model differ in shape, so a mixed pair cannot load unnoticed.
    private func models() throws -> (old: LlamaModel, new: LlamaModel) {
        (try TestModels.model(TestModels.gqaTied, seed: 1), try TestModels.model(TestModels.mhaUntiedBias, seed: 2))
    }

    /// A directory for one round: `existing` puts the old model there first, with a tokenizer file.
    private func modelRound(_ name: String, existing: Bool, old: LlamaModel) throws -> (parent: String, dir: String) {
        let parent = root + "/" + name
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let dir = parent + "/model"
        if existing {
            try old.save(directory: dir)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        }
        return (parent, dir)
    }

    /// After a round: the directory loads as exactly `old` or `new` (or is absent, if it was),
    /// the tokenizer is kept, and after one more save nothing temporary is left.
    private func checkModelRound(parent: String, dir: String, existing: Bool, old: LlamaModel, new: LlamaModel,
                                 mustBeNew: Bool, mustBeOld: Bool, step: Int) throws {
        if !existing && !FileManager.default.fileExists(atPath: dir) {
            XCTAssertFalse(mustBeNew, "step \(step): the save finished but nothing is at the path")
        } else {
            let loaded = try LlamaModel.load(directory: dir)
            XCTAssertTrue(same(loaded, old) || same(loaded, new), "step \(step): the folder loads but is neither model")
            if mustBeNew { XCTAssertTrue(same(loaded, new), "step \(step): the finished save is not what loads") }
            if mustBeOld { XCTAssertTrue(existing && same(loaded, old), "step \(step): the failed save changed the model") }
        }
        if existing { XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/tokenizer.json"), "step \(step)") }
        try old.save(directory: dir)
        XCTAssertEqual(listing(parent), ["model"], "step \(step)")
        XCTAssertEqual(listing(dir), existing ? ["config.json", "model.safetensors", "tokenizer.json"]
                                              : ["config.json", "model.safetensors"], "step \(step)")
    }

    func testModelSaveKilledAtEveryStep() throws {
        let (old, new) = try models()
        for existing in [false, true] {
            var step = 1
            while true {
                let (parent, dir) = try modelRound("kill-\(existing)-\(step)", existing: existing, old: old)
                let finished = runChild(killedAt: step) { try new.save(directory: dir) }
                try checkModelRound(parent: parent, dir: dir, existing: existing, old: old, new: new,
                                    mustBeNew: finished, mustBeOld: false, step: step)
                if finished { break }
                step += 1
            }
            XCTAssertGreaterThan(step, 5, "the save has a few steps at least")
        }
    }

    func testModelSaveFailingAtEveryStepChangesNothing() throws {
        let (old, new) = try models()
        for existing in [false, true] {
            var step = 1
            while true {
                let (parent, dir) = try modelRound("fail-\(existing)-\(step)", existing: existing, old: old)
                let steps = injectFailure(at: step)
                var failed = false
                do { try new.save(directory: dir) } catch { failed = true }
                fileOperationHook = nil
                if failed {
                    XCTAssertEqual(listing(parent), existing ? ["model"] : [], "step \(step): a failed save left something")
                    if existing {
                        XCTAssertEqual(listing(dir), ["config.json", "model.safetensors", "tokenizer.json"], "step \(step)")
                    }
                }
                try checkModelRound(parent: parent, dir: dir, existing: existing, old: old, new: new,
                                    mustBeNew: !failed, mustBeOld: failed, step: step)
                if steps() < step { break }
                step += 1
            }
        }
    }

    /// Two handles saving different models to one path at once: every round, the folder holds
    /// exactly one of them.
    func testConcurrentSavesNeverMix() throws {
        var configA = TestModels.gqaTied
        configA.vocabSize = 256; configA.hiddenSize = 64; configA.intermediateSize = 128
        var configB = configA
        configB.ropeTheta = 20_000
        let a = try TestModels.model(configA, seed: 11), b = try TestModels.model(configB, seed: 12)
        let dir = root + "/shared"
        var mixed = 0, errors: [String] = []
        let errorsLock = NSLock()
        for _ in 0..<100 {
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do { try (i == 0 ? a : b).save(directory: dir) } catch {
                    errorsLock.lock(); errors.append("\(error)"); errorsLock.unlock()
                }
            }
            let loaded = try LlamaModel.load(directory: dir)
            if !same(loaded, a) && !same(loaded, b) { mixed += 1 }
        }
        XCTAssertEqual(mixed, 0, "rounds whose folder mixes both models")
        XCTAssertEqual(errors, [])
        XCTAssertEqual(listing(root), ["shared"])
    }
}
