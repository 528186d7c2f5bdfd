import Foundation
import XCTest
@testable import DPO

/// Checkpoint saves are all-or-nothing: a save killed (SIGKILL, in a child process) or failing at
/// every one of its file system steps in turn leaves, once reloaded, exactly the old checkpoint or
/// exactly the new one, never nothing where there was one; the next save cleans up what the
/// kill left.
final class CheckpointSaveAtomicityTests: SaveTestCase {
    // MARK: - Checkpoint saves

    /// Two trainers from the same start, one step apart: the old and the new checkpoint.
    private func trainers() throws -> (old: DPOTrainer, new: DPOTrainer) {
        func make(steps: Int) throws -> DPOTrainer {
            let policy = try LlamaModel.randomlyInitialized(config: TestModels.gqaTied, seed: 3)
            let reference = try LlamaModel.randomlyInitialized(config: TestModels.gqaTied, seed: 4)
            var c = DPOConfig()
            c.optimizer.learningRate = 1e-2
            let t = try DPOTrainer(policy: policy, reference: reference, config: c)
            for s in 0..<steps { _ = try t.step(Self.pairs(seed: UInt64(s))) }
            return t
        }
        return (try make(steps: 1), try make(steps: 2))
    }

    static func pairs(seed: UInt64) -> [PreferencePair] {
        var rng = Xoshiro256(seed: seed)
        func ids(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % 24) } }
        return (0..<2).map { _ in PreferencePair(promptIds: ids(3), chosenIds: ids(2), rejectedIds: ids(3)) }
    }

    /// After a round: the checkpoint loads as exactly the old or the new one (or is absent if
    /// it was), and one more save leaves nothing temporary beside it.
    private func checkCheckpointRound(parent: String, dir: String, existing: Bool, old: DPOTrainer, new: DPOTrainer,
                                      probe: DPOTrainer, mustBeNew: Bool, mustBeOld: Bool, step: Int) throws {
        do {
            try probe.loadCheckpoint(directory: dir)
            let matchesOld = probe.globalStep == old.globalStep && probe.policy.parameters.array == old.policy.parameters.array
            let matchesNew = probe.globalStep == new.globalStep && probe.policy.parameters.array == new.policy.parameters.array
            XCTAssertTrue(matchesOld || matchesNew, "step \(step): the checkpoint loads but is neither")
            if mustBeNew { XCTAssertTrue(matchesNew, "step \(step): the finished save is not what loads") }
            if mustBeOld { XCTAssertTrue(existing && matchesOld, "step \(step): the failed save changed the checkpoint") }
            XCTAssertFalse(!existing && matchesOld, "step \(step)")
        } catch {
            XCTAssertFalse(existing, "step \(step): the old checkpoint no longer loads: \(error)")
            XCTAssertFalse(mustBeNew, "step \(step): the finished save does not load: \(error)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "step \(step): something that does not load is at the path: \(error)")
        }
        try old.saveCheckpoint(directory: dir)
        XCTAssertEqual(listing(parent), ["ck"], "step \(step)")
    }

    func testCheckpointSaveKilledAtEveryStep() throws {
        let (old, new) = try trainers()
        let probe = try trainers().old
        for existing in [true, false] {
            var step = 1
            while true {
                let parent = root + "/kill-ck-\(existing)-\(step)", dir = parent + "/ck"
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
                if existing { try old.saveCheckpoint(directory: dir) }
                let finished = runChild(killedAt: step) { try new.saveCheckpoint(directory: dir) }
                try checkCheckpointRound(parent: parent, dir: dir, existing: existing, old: old, new: new,
                                         probe: probe, mustBeNew: finished, mustBeOld: false, step: step)
                if finished { break }
                step += 1
            }
            XCTAssertGreaterThan(step, 10)
        }
    }

    func testCheckpointSaveFailingAtEveryStepChangesNothing() throws {
        let (old, new) = try trainers()
        let probe = try trainers().old
        for existing in [true, false] {
            var step = 1
            while true {
                let parent = root + "/fail-ck-\(existing)-\(step)", dir = parent + "/ck"
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
                if existing { try old.saveCheckpoint(directory: dir) }
                let steps = injectFailure(at: step)
                var failed = false
                do { try new.saveCheckpoint(directory: dir) } catch { failed = true }
                fileOperationHook = nil
                XCTAssertEqual(listing(parent), failed && !existing ? [] : ["ck"], "step \(step): leftovers")
                try checkCheckpointRound(parent: parent, dir: dir, existing: existing, old: old, new: new,
                                         probe: probe, mustBeNew: !failed, mustBeOld: failed, step: step)
                if steps() < step { break }
                step += 1
            }
        }
    }
}
