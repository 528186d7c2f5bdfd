import Foundation
import XCTest
@testable import DPO

/// Only regular files are read, and files read whole are bounded: a FIFO in place of
/// config.json must not block the load, a device must not be read until memory runs out, and
/// an oversized config.json is refused before it is read.
final class FileKindTests: XCTestCase {
    private func modelDirectory() throws -> String {
        let root = NSTemporaryDirectory() + "dpo-file-kind-" + UUID().uuidString
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        let dir = root + "/model"
        try TestModels.model(TestModels.gqaTied).save(directory: dir)
        return dir
    }

    /// Runs `body` on another thread; fails if it has not returned after `seconds`, then calls
    /// `unblock` so that the thread can finish.
    private func finishes(within seconds: Double, unblock: () -> Void, _ body: @escaping () -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        Thread { body(); done.signal() }.start()
        if done.wait(timeout: .now() + seconds) == .success { return true }
        unblock()
        done.wait()
        return false
    }

    func testFIFOConfigIsRefusedWithoutBlocking() throws {
        let dir = try modelDirectory()
        let config = dir + "/config.json"
        try FileManager.default.removeItem(atPath: config)
        XCTAssertEqual(mkfifo(config, 0o600), 0)
        var error: Error?
        let returned = finishes(within: 10, unblock: {
            // A writer that opens and closes the FIFO gives the blocked reader end of file.
            let fd = open(config, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }) {
            do { _ = try LlamaModel.load(directory: dir) } catch let e { error = e }
        }
        XCTAssertTrue(returned, "loading a model whose config.json is a FIFO blocked")
        XCTAssertTrue("\(error.map { "\($0)" } ?? "no error")".contains("not a regular file"), "\(String(describing: error))")
    }

    func testFIFOWeightsAreRefusedWithoutBlocking() throws {
        let dir = try modelDirectory()
        let weights = dir + "/model.safetensors"
        try FileManager.default.removeItem(atPath: weights)
        XCTAssertEqual(mkfifo(weights, 0o600), 0)
        var error: Error?
        let returned = finishes(within: 10, unblock: {
            let fd = open(weights, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }) {
            do { _ = try LlamaModel.load(directory: dir) } catch let e { error = e }
        }
        XCTAssertTrue(returned, "loading a model whose model.safetensors is a FIFO blocked")
        XCTAssertTrue("\(error.map { "\($0)" } ?? "no error")".contains("not a regular file"), "\(String(describing: error))")
    }

    /// A character device (here /dev/null, which is harmless to read; /dev/urandom would be read
    /// until memory runs out) is not read at all.
    func testDeviceConfigIsRefused() throws {
        let dir = try modelDirectory()
        let config = dir + "/config.json"
        try FileManager.default.removeItem(atPath: config)
        try FileManager.default.createSymbolicLink(atPath: config, withDestinationPath: "/dev/null")
        XCTAssertThrowsError(try LlamaModel.load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("character device, not a regular file"), "\(error)")
        }
        XCTAssertThrowsError(try readFile("/dev/zero", limit: 1 << 20)) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
    }

    /// A config.json larger than FileSizeLimit.json (16 MiB; here a sparse file) is refused
    /// before it is read; a smaller limit applies to what is read past the size fstat gave.
    func testOversizedConfigIsRefused() throws {
        let dir = try modelDirectory()
        let config = dir + "/config.json"
        XCTAssertEqual(truncate(config, off_t(17 << 20)), 0)
        XCTAssertThrowsError(try LlamaModel.load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("larger than the limit of 16777216 bytes"), "\(error)")
        }
        XCTAssertThrowsError(try readFile(dir + "/model.safetensors", limit: 100)) { error in
            XCTAssertTrue("\(error)".contains("larger than the limit of 100 bytes"), "\(error)")
        }
    }
}
