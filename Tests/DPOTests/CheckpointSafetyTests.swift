import Foundation
import XCTest
@testable import DPO

/// A checkpoint save replaces only a swift-dpo checkpoint (or an empty directory); a checkpoint
/// load checks everything (manifest checksums, finite values, every field) before it changes
/// the trainer, so a load that fails leaves the trainer exactly as it was.
final class CheckpointSafetyTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "dpo-checkpoint-safety-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    }

    private func trainer(steps: Int) throws -> DPOTrainer {
        let policy = try LlamaModel.randomlyInitialized(config: TestModels.gqaTied, seed: 3)
        let reference = try LlamaModel.randomlyInitialized(config: TestModels.gqaTied, seed: 4)
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        let t = try DPOTrainer(policy: policy, reference: reference, config: c)
        for s in 0..<steps { _ = try t.step(CheckpointSaveAtomicityTests.pairs(seed: UInt64(s))) }
        return t
    }

    /// Everything a load could change, to compare before and after a failed load (weights by
    /// an FNV-1a hash of their bits, to keep failure messages short).
    private func snapshot(_ t: DPOTrainer) -> [String] {
        func hash(_ values: [Float]) -> String {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for v in values { h = (h ^ UInt64(v.bitPattern)) &* 0x100_0000_01b3 }
            return String(h, radix: 16)
        }
        return ["\(t.globalStep)", "\(t.pendingMicroBatches)", hash(t.policy.parameters.array),
                hash(t.reference?.parameters.array ?? []), hash(t.state.adam.m.array), hash(t.state.adam.v.array),
                JSON.serialize(.object(t.config.jsonObject))]
    }

    private func contents(_ path: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: path) else { return [] }
        return (e.allObjects as? [String] ?? []).sorted()
    }

    // MARK: - What a save may replace

    func testSaveRefusesADirectoryThatIsNotACheckpoint() throws {
        let t = try trainer(steps: 1)
        let dir = root + "/project"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try Data("notes".utf8).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/data/x.bin"))
        XCTAssertThrowsError(try t.saveCheckpoint(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("neither empty nor a swift-dpo checkpoint"), "\(error)")
        }
        XCTAssertEqual(contents(dir), ["data", "data/x.bin", "notes.txt"])
        XCTAssertEqual(try String(contentsOfFile: dir + "/notes.txt"), "notes")
        XCTAssertEqual(contents(root), ["project", "project/data", "project/data/x.bin", "project/notes.txt"])
    }

    func testSaveRefusesARegularFile() throws {
        let t = try trainer(steps: 1)
        let file = root + "/results.csv"
        try Data("a,b\n".utf8).write(to: URL(fileURLWithPath: file))
        XCTAssertThrowsError(try t.saveCheckpoint(directory: file)) { error in
            XCTAssertTrue("\(error)".contains("is not a directory"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: file), "a,b\n")
        XCTAssertEqual(contents(root), ["results.csv"])
    }

    func testSaveReplacesAnEmptyDirectoryOrACheckpoint() throws {
        let first = try trainer(steps: 1), second = try trainer(steps: 2)
        let dir = root + "/ck"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try first.saveCheckpoint(directory: dir)
        try second.saveCheckpoint(directory: dir)
        let probe = try trainer(steps: 0)
        try probe.loadCheckpoint(directory: dir)
        XCTAssertEqual(snapshot(probe), snapshot(second))
        XCTAssertEqual(contents(root).filter { !$0.hasPrefix("ck/") }, ["ck"])
    }

    // MARK: - Loads that fail change nothing

    /// trainer_state.json without `adam_steps` (the manifest rewritten to match, so that only
    /// the field check can catch it): the load fails and the trainer keeps its step counter.
    func testLoadWithAMissingFieldLeavesTheTrainerUnchanged() throws {
        let dir = root + "/ck"
        try trainer(steps: 1).saveCheckpoint(directory: dir)
        let statePath = dir + "/trainer_state.json"
        var state = try JSON.parse(try readFile(statePath)).object!
        state["adam_steps"] = nil
        try Data(JSON.serialize(.object(state)).utf8).write(to: URL(fileURLWithPath: statePath))
        try writeManifest(dir)

        let t = try trainer(steps: 2)
        let before = snapshot(t)
        XCTAssertThrowsError(try t.loadCheckpoint(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("adam_steps"), "\(error)")
        }
        XCTAssertEqual(snapshot(t), before)
    }

    /// Overwrites the last float of `file` (the last tensor's last value) with NaN.
    private func injectNaN(_ file: String) throws {
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: file))
        defer { try? handle.close() }
        try handle.seek(toOffset: try handle.seekToEnd() - 4)
        var nan = Float.nan.bitPattern.littleEndian
        handle.write(Data(bytes: &nan, count: 4))
    }

    /// NaN written into the policy, the reference or the optimizer moments is refused: by the
    /// manifest's checksum, and (manifest rewritten to match) by the finite-value checks.
    func testCorruptedDataIsRefusedAndLeavesTheTrainerUnchanged() throws {
        let saved = try trainer(steps: 1)
        for file in ["model/model.safetensors", "reference/model.safetensors", "optimizer.safetensors"] {
            for rewriteManifest in [false, true] {
                let dir = root + "/ck-\(file.replacingOccurrences(of: "/", with: "-"))-\(rewriteManifest)"
                try saved.saveCheckpoint(directory: dir)
                try injectNaN(dir + "/" + file)
                if rewriteManifest { try writeManifest(dir) }
                let t = try trainer(steps: 2)
                let before = snapshot(t)
                XCTAssertThrowsError(try t.loadCheckpoint(directory: dir), "\(file)") { error in
                    let expected = rewriteManifest ? "NaN or infinite" : "does not match the checksum"
                    XCTAssertTrue("\(error)".contains(expected), "\(file): \(error)")
                }
                XCTAssertEqual(snapshot(t), before, file)
            }
        }
    }

    /// A truncated file is caught by the size the manifest records.
    func testTruncatedFileIsRefused() throws {
        let dir = root + "/ck"
        try trainer(steps: 1).saveCheckpoint(directory: dir)
        XCTAssertEqual(truncate(dir + "/optimizer.safetensors", 100), 0)
        XCTAssertThrowsError(try trainer(steps: 0).loadCheckpoint(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("optimizer.safetensors is 100 bytes"), "\(error)")
        }
    }
}
