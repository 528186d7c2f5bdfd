import Foundation
import XCTest
@testable import DPO

/// What the save-atomicity tests share: a scratch directory (on tmpfs when there is one, so the
/// saves' many fsyncs cost nothing), directory listings, model comparison, and the two ways to
/// interrupt a save at a chosen file system step: a SIGKILL in a child process, or an injected
/// failure (both through `fileOperationHook`).
class SaveTestCase: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : NSTemporaryDirectory()
        root = base + "dpo-save-atomicity-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    }

    override func tearDown() {
        fileOperationHook = nil
    }

    func listing(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    func same(_ a: LlamaModel, _ b: LlamaModel) -> Bool {
        a.config.normalized == b.config.normalized && a.parameters.array == b.parameters.array
    }

    /// Runs `body` in a child process killed with SIGKILL at its `step`-th file system change.
    /// Returns true when the child finished `body` before reaching that step.
    func runChild(killedAt step: Int, _ body: () throws -> Void) -> Bool {
        let pid = fork()
        if pid == 0 {
            var count = 0
            fileOperationHook = {
                count += 1
                if count == step { kill(getpid(), SIGKILL) }
            }
            do { try body() } catch { _exit(2) }
            _exit(0)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f, code = (status >> 8) & 0xff
        XCTAssertTrue(signal == SIGKILL || (signal == 0 && code == 0), "child ended with status \(status) at step \(step)")
        return signal == 0 && code == 0
    }

    /// Makes the `step`-th file system change throw; returns the number of changes seen.
    func injectFailure(at step: Int) -> () -> Int {
        var count = 0
        fileOperationHook = {
            count += 1
            if count == step { throw DPOError.io("injected failure at step \(step)") }
        }
        return { count }
    }
}
