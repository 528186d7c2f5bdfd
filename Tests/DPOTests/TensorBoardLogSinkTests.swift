import Foundation
import XCTest
@testable import DPO

/// An event of a TensorBoard event file, as the reader below decodes it.
struct DecodedEvent: Equatable {
    var wallTime = 0.0
    var step: Int64 = 0
    var fileVersion: String? = nil
    var sessionStatus: Int64? = nil
    var scalars: [(tag: String, value: Float)] = []

    static func == (a: DecodedEvent, b: DecodedEvent) -> Bool {
        a.wallTime == b.wallTime && a.step == b.step && a.fileVersion == b.fileVersion && a.sessionStatus == b.sessionStatus
            && a.scalars.map(\.tag) == b.scalars.map(\.tag) && a.scalars.map(\.value.bitPattern) == b.scalars.map(\.value.bitPattern)
    }
}

/// A small reader of event files for the tests: TFRecords (both CRCs checked) of `Event`
/// messages, decoded from protobuf's wire format field by field. It refuses what it does not
/// understand, so an encoding mistake cannot pass unnoticed.
enum EventFileReader {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func records(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var out: [[UInt8]] = [], i = 0
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << ($1 * 8) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << ($1 * 8) } }
        while i < bytes.count {
            guard bytes.count - i >= 12 else { throw Failure(description: "truncated header at \(i)") }
            guard u32(i + 8) == TFRecord.masked(CRC32C.checksum(bytes[i..<i + 8])) else { throw Failure(description: "length CRC at \(i)") }
            let n = Int(u64(i))
            guard bytes.count - i - 12 >= n + 4 else { throw Failure(description: "truncated record at \(i)") }
            let data = Array(bytes[i + 12..<i + 12 + n])
            guard u32(i + 12 + n) == TFRecord.masked(CRC32C.checksum(data)) else { throw Failure(description: "data CRC at \(i)") }
            out.append(data)
            i += 16 + n
        }
        return out
    }

    /// (field, wire type, varint or fixed value, bytes) of one message.
    static func fields(_ b: [UInt8]) throws -> [(field: Int, wire: Int, number: UInt64, data: [UInt8])] {
        var i = 0, out: [(Int, Int, UInt64, [UInt8])] = []
        func varint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard i < b.count, shift < 64 else { throw Failure(description: "bad varint") }
                let byte = b[i]; i += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
        }
        func fixed(_ n: Int) throws -> UInt64 {
            guard b.count - i >= n else { throw Failure(description: "truncated fixed field") }
            defer { i += n }
            return (0..<n).reduce(0) { $0 | UInt64(b[i + $1]) << ($1 * 8) }
        }
        while i < b.count {
            let key = try varint()
            let field = Int(key >> 3), wire = Int(key & 7)
            switch wire {
            case 0: out.append((field, wire, try varint(), []))
            case 1: out.append((field, wire, try fixed(8), []))
            case 5: out.append((field, wire, try fixed(4), []))
            case 2:
                let n = Int(try varint())
                guard b.count - i >= n else { throw Failure(description: "truncated field \(field)") }
                out.append((field, wire, 0, Array(b[i..<i + n]))); i += n
            default: throw Failure(description: "wire type \(wire)")
            }
        }
        return out
    }

    static func event(_ data: [UInt8]) throws -> DecodedEvent {
        var e = DecodedEvent()
        for f in try fields(data) {
            switch (f.field, f.wire) {
            case (1, 1): e.wallTime = Double(bitPattern: f.number)
            case (2, 0): e.step = Int64(bitPattern: f.number)
            case (3, 2): e.fileVersion = String(decoding: f.data, as: UTF8.self)
            case (7, 2):
                for s in try fields(f.data) {
                    guard s.field == 1, s.wire == 0 else { throw Failure(description: "SessionLog field \(s.field)") }
                    e.sessionStatus = Int64(bitPattern: s.number)
                }
            case (5, 2):
                for v in try fields(f.data) {
                    guard v.field == 1, v.wire == 2 else { throw Failure(description: "Summary field \(v.field)") }
                    var tag: String?, value: Float?
                    for x in try fields(v.data) {
                        switch (x.field, x.wire) {
                        case (1, 2): tag = String(decoding: x.data, as: UTF8.self)
                        case (2, 5): value = Float(bitPattern: UInt32(x.number))
                        default: throw Failure(description: "Summary.Value field \(x.field)")
                        }
                    }
                    guard let tag, let value else { throw Failure(description: "Summary.Value without tag or simple_value") }
                    e.scalars.append((tag, value))
                }
            default: throw Failure(description: "Event field \(f.field) wire \(f.wire)")
            }
        }
        return e
    }

    static func events(file: String) throws -> [DecodedEvent] {
        try records(Array(FileManager.default.contents(atPath: file) ?? Data())).map(event)
    }

    /// The event files of `directory`, by name (TensorBoard's order).
    static func eventFiles(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("events.out.tfevents.") }.sorted().map { directory + "/" + $0 }
    }

    /// The scalars of an event stream as TensorBoard's reader keeps them: (tag, step, value),
    /// dropping what a SessionLog.START purges (every earlier event with step >= its step).
    static func scalars(_ events: [DecodedEvent]) -> [(tag: String, step: Int64, value: Float)] {
        var out: [(tag: String, step: Int64, value: Float)] = []
        for e in events {
            if e.sessionStatus == 1 { out.removeAll { $0.step >= e.step } }
            for s in e.scalars { out.append((s.tag, e.step, s.value)) }
        }
        return out
    }
}

final class TensorBoardLogSinkTests: XCTestCase {
    func fixture() throws -> JSONObject {
        let path = TestModels.fixturesDirectory() + "/tensorboard/expected.json"
        return try XCTUnwrap(JSON.parse(Array(FileManager.default.contents(atPath: path) ?? Data())).object)
    }

    func systemHostName() -> String {
        var b = [CChar](repeating: 0, count: 256)
        gethostname(&b, 255)
        return String(cString: b)
    }

    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    func bytes(hex: String) -> [UInt8] {
        let a = Array(hex.utf8)
        return stride(from: 0, to: a.count, by: 2).map { UInt8(String(decoding: a[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }

    // MARK: - The format against TensorBoard's own writer

    func testCRC32CKnownVectors() throws {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283, "the CRC-32C check value")
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA, "RFC 3720 B.4: 32 bytes of zeros")
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43, "RFC 3720 B.4: 32 bytes of ones")
        XCTAssertEqual(CRC32C.checksum(Array(0..<32)), 0x46DD_794E, "RFC 3720 B.4: incrementing bytes")
        XCTAssertEqual(CRC32C.update(CRC32C.checksum(Array("12345".utf8)), Array("6789".utf8)), 0xE306_9283, "continued")
        let cases = try XCTUnwrap(fixture()["crc32c"]?.array)
        XCTAssertEqual(cases.count, 6)
        for c in cases {
            let o = try XCTUnwrap(c.object), data = bytes(hex: try XCTUnwrap(o["hex"]?.string))
            XCTAssertEqual(Int(CRC32C.checksum(data)), o["crc32c"]?.int, "\(data.count) bytes")
            XCTAssertEqual(Int(TFRecord.masked(CRC32C.checksum(data))), o["masked"]?.int, "\(data.count) bytes, masked")
        }
    }

    /// Every event is byte for byte the TFRecord TensorBoard's RecordWriter makes of protobuf's
    /// serialization of the same Event.
    func testEventsAreByteIdenticalToTensorBoardsWriter() throws {
        let cases = try XCTUnwrap(fixture()["events"]?.array)
        XCTAssertEqual(cases.count, 14)
        for c in cases {
            let o = try XCTUnwrap(c.object)
            let wallTime = try XCTUnwrap(o["wall_time"]?.double)
            let step = Int64(o["step"]?.string ?? "0")!
            let data: [UInt8]
            switch o["kind"]?.string {
            case "file_version": data = TensorBoardEvent.fileVersion(wallTime: wallTime)
            case "session_start": data = TensorBoardEvent.sessionStart(wallTime: wallTime, step: step)
            case "scalar":
                let value = Float(try XCTUnwrap(Double(try XCTUnwrap(o["value"]?.string))))
                data = TensorBoardEvent.scalar(wallTime: wallTime, step: step, tag: try XCTUnwrap(o["tag"]?.string), value: value)
            default: XCTFail("kind \(String(describing: o["kind"]))"); continue
            }
            let expected = try XCTUnwrap(o["record"]?.string)
            XCTAssertEqual(hex(TFRecord.frame(data)), expected, "\(o["kind"]!.string!) step \(step) \(o["tag"]?.string ?? "")")
            // and the test's reader reads it back
            let decoded = try EventFileReader.event(try XCTUnwrap(EventFileReader.records(bytes(hex: expected)).first))
            XCTAssertEqual(decoded.step, step)
            XCTAssertEqual(decoded.wallTime, wallTime)
        }
    }

    func testTagsAreTransformersRewriteLogs() throws {
        let cases = try XCTUnwrap(fixture()["tags"]?.array)
        XCTAssertEqual(cases.count, 21)
        for c in cases {
            let pair = try XCTUnwrap(c.array)
            XCTAssertEqual(TensorBoardLogSink.tag(for: pair[0].string!), pair[1].string!, pair[0].string!)
        }
    }

    // MARK: - The sink

    func testSinkWritesRecordsAsScalarsAfterTheHeader() throws {
        let dir = try makeScratchDirectory() + "/runs/a"
        let sink = TensorBoardLogSink(directory: dir)
        expectDPOError(["wrong state", "before begin"]) { try sink.write(["loss": 1, "step": 1]) }
        let before = Date().timeIntervalSince1970
        try sink.begin(history: [])
        try sink.write(["loss": 0.5, "eval_loss": 0.25, "epoch": 0.1, "step": 3])
        try sink.write(["train_loss": 1.0 / 3, "step": 4])
        let path = try XCTUnwrap(sink.path)
        XCTAssertEqual(EventFileReader.eventFiles(dir), [path])

        // events.out.tfevents.<%010d time>.<hostname>.<pid>.<n>
        let name = (path as NSString).lastPathComponent
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        XCTAssertEqual(Array(parts.prefix(3)), ["events", "out", "tfevents"])
        let seconds = try XCTUnwrap(Double(parts[3]))
        XCTAssertEqual(parts[3].count, 10)
        XCTAssertTrue(abs(seconds - before) < 5)
        XCTAssertEqual(parts.dropFirst(4).dropLast(2).joined(separator: "."), systemHostName())
        XCTAssertEqual(parts[parts.count - 2], "\(getpid())")
        XCTAssertNotNil(Int(parts[parts.count - 1]))

        let events = try EventFileReader.events(file: path)
        XCTAssertEqual(events.count, 6)
        XCTAssertEqual(events[0].fileVersion, "brain.Event:2")
        XCTAssertEqual(events[1].sessionStatus, 1)
        XCTAssertEqual(events[1].step, 0)
        XCTAssertTrue(events.allSatisfy { abs($0.wallTime - before) < 5 })
        let scalars = events.dropFirst(2).map { e -> String in
            XCTAssertEqual(e.scalars.count, 1, "one scalar per event, as SummaryWriter.add_scalar")
            return "\(e.scalars[0].tag) \(e.step) \(e.scalars[0].value)"
        }
        XCTAssertEqual(scalars, ["train/epoch 3 0.1", "eval/loss 3 0.25", "train/loss 3 0.5", "train/train_loss 4 0.33333334"])
        expectDPOError(["tensorboard", "integral 'step'", "none"]) { try sink.write(["loss": 1]) }
        expectDPOError(["tensorboard", "integral 'step'", "2.5"]) { try sink.write(["loss": 1, "step": 2.5]) }
        XCTAssertEqual(try EventFileReader.events(file: path).count, 6, "a refused record writes nothing")
    }

    /// Each begin is a new writer (a new file) that replays the history after a START event.
    func testBeginStartsANewFileReplayingTheHistory() throws {
        let dir = try makeScratchDirectory()
        let sink = TensorBoardLogSink(directory: dir)
        try sink.begin(history: [])
        for s in 1...5 { try sink.write(["loss": Double(s), "step": Double(s)]) }
        let first = try XCTUnwrap(sink.path)
        // A resume from step 3's checkpoint, into the same directory.
        let history: [LogRecord] = (1...3).map { ["loss": Double($0), "step": Double($0)] }
        let resumed = TensorBoardLogSink(directory: dir)
        try resumed.begin(history: history)
        try resumed.write(["loss": 40, "step": 4])
        let second = try XCTUnwrap(resumed.path)
        XCTAssertNotEqual(first, second)
        XCTAssertEqual(Set(EventFileReader.eventFiles(dir)), [first, second])
        let replay = try EventFileReader.events(file: second)
        XCTAssertEqual(replay.count, 6)
        XCTAssertEqual(replay.dropFirst(2).map(\.step), [1, 2, 3, 4])
        XCTAssertEqual(replay.dropFirst(2).map { $0.scalars[0].value }, [1, 2, 3, 40])
        // What TensorBoard shows: the first file's steps 1-5 purged by the START, then the replay.
        let shown = EventFileReader.scalars(try EventFileReader.events(file: first) + replay)
        XCTAssertEqual(shown.map(\.step), [1, 2, 3, 4])
        XCTAssertEqual(shown.map(\.value), [1, 2, 3, 40])

        let other = try makeScratchDirectory() + "/b"
        expectDPOError(["integral 'step'"]) { try TensorBoardLogSink(directory: other).begin(history: [["loss": 1]]) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: other), "a refused history creates nothing")
    }

    /// A failed write leaves the file ending at its last complete record, and the sink writing on.
    func testAFailedWriteLeavesNoPartialRecord() throws {
        let sink = TensorBoardLogSink(directory: try makeScratchDirectory())
        try sink.begin(history: [["loss": 1, "step": 1]])
        let path = try XCTUnwrap(sink.path)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)

        // Injected before the write.
        fileOperationHook = { throw DPOError.io("injected") }
        expectDPOError(["injected"]) { try sink.write(["loss": 2, "step": 2]) }
        fileOperationHook = nil
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, size)

        // A real partial write: the file size limit lets 10 bytes of the record through, then EFBIG.
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var old = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        var limited = old
        limited.rlim_cur = rlim_t(size + 10)
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited), 0)
        var failure: Error?
        do { try sink.write(["loss": 3, "step": 3]) } catch { failure = error }
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old), 0)
        signal(SIGXFSZ, oldHandler)
        XCTAssertTrue("\(String(describing: failure))".contains("File too large"), "\(String(describing: failure))")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, size, "cut back to the last record")

        try sink.write(["loss": 4, "step": 4])
        let events = try EventFileReader.events(file: path)
        XCTAssertEqual(events.dropFirst(2).map(\.step), [1, 4])
    }

    // MARK: - report_to and logging_dir

    func testReportToAndLoggingDir() throws {
        var a = TrainingArguments()
        a.outputDir = "out"
        for ok in [["tensorboard"], ["jsonl", "tensorboard"], ["tensorboard", "jsonl"], ["none"], []] {
            a.reportTo = ok
            XCTAssertNoThrow(try a.validate(), "\(ok)")
        }
        a.reportTo = ["tensorboard", "none"]
        expectDPOError(["report_to: 'none' cannot be combined"]) { try a.validate() }
        a.reportTo = ["tensorboardx"]
        expectDPOError(["report_to: unknown value 'tensorboardx'", "valid: none, jsonl, tensorboard"]) { try a.validate() }
        a.reportTo = ["jsonl", "tensorboard"]
        a.loggingDir = ""
        expectDPOError(["logging_dir must be a directory path"]) { try a.validate() }

        a.loggingDir = "/tmp/tb-here"
        var o = JSONObject()
        a.write(into: &o)
        XCTAssertEqual(o["logging_dir"], .string("/tmp/tb-here"))
        var fromJSON = TrainingArguments()
        XCTAssertTrue(try fromJSON.set("logging_dir", .string("/tmp/tb-here")))
        XCTAssertEqual(fromJSON.loggingDir, "/tmp/tb-here")
        XCTAssertTrue(try fromJSON.set("logging_dir", .null))
        XCTAssertNil(fromJSON.loggingDir)
        let sinks = a.makeLogSinks()
        XCTAssertEqual((sinks[0] as? JSONLLogSink)?.path, "out/metrics.jsonl")
        XCTAssertEqual((sinks[1] as? TensorBoardLogSink)?.directory, "/tmp/tb-here")

        // The default: TENSORBOARD_LOGGING_DIR, else output_dir/runs/<%b%d_%H-%M-%S>_<hostname>.
        a.loggingDir = nil
        unsetenv("TENSORBOARD_LOGGING_DIR")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "MMMdd_HH-mm-ss"
        let before = formatter.string(from: Date())
        let resolved = a.resolvedLoggingDir()
        let after = formatter.string(from: Date())
        let host = systemHostName()
        XCTAssertTrue([before, after].map { "out/runs/\($0)_\(host)" }.contains(resolved), resolved)
        setenv("TENSORBOARD_LOGGING_DIR", "~/tb/x", 1)
        XCTAssertEqual(a.resolvedLoggingDir(), NSHomeDirectory() + "/tb/x")
        setenv("TENSORBOARD_LOGGING_DIR", "rel/dir", 1)
        XCTAssertEqual(a.resolvedLoggingDir(), "rel/dir")
        a.loggingDir = "mine"
        XCTAssertEqual(a.resolvedLoggingDir(), "mine", "the argument wins")
        unsetenv("TENSORBOARD_LOGGING_DIR")
    }

    // MARK: - The training loop

    func dpoTrainer(maxSteps: Int) throws -> DPOTrainer {
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        c.optimizer.maxSteps = maxSteps
        let policy = try LlamaModel.randomlyInitialized(config: PreferenceTask.config, seed: 5)
        return try DPOTrainer(policy: policy, reference: nil, config: c)
    }

    /// The scalars of the event `files`, read in this order, as TensorBoard shows them, against the records.
    func assertScalars(_ files: [String], equal history: [LogRecord], file: StaticString = #filePath, line: UInt = #line) throws {
        let shown = EventFileReader.scalars(try files.flatMap(EventFileReader.events(file:)))
        var expected: [String] = []
        for r in history {
            for (name, value) in r.sorted(by: { $0.key < $1.key }) where name != "step" {
                expected.append("\(TensorBoardLogSink.tag(for: name)) \(Int64(r["step"]!)) \(Float(value).bitPattern)")
            }
        }
        XCTAssertEqual(shown.map { "\($0.tag) \($0.step) \($0.value.bitPattern)" }, expected, file: file, line: line)
    }

    func testTrainingLoopReportsToTensorBoard() throws {
        let out = try makeScratchDirectory(), tb = out + "/tb"
        func args(_ dir: String) -> TrainingArguments {
            var a = TrainingArguments()
            a.outputDir = dir; a.loggingDir = tb
            a.reportTo = ["jsonl", "tensorboard"]
            a.perDeviceTrainBatchSize = 2; a.maxSteps = 6; a.loggingSteps = 2
            a.evalStrategy = .steps; a.evalSteps = 3; a.saveStrategy = .steps; a.saveSteps = 3
            return a
        }
        let pairs = PreferenceTask.pairs(6, seed: 3)
        let loop = try TrainingLoop(trainer: try dpoTrainer(maxSteps: 6), args: args(out), trainDataset: pairs, evalDataset: Array(pairs.prefix(2)))
        _ = try loop.train()
        let h = loop.state.logHistory
        XCTAssertEqual(h.map { $0["step"]! }, [2, 3, 4, 6, 6, 6], "train records at 2, 4, 6, evals at 3, 6, the summary")
        let files = EventFileReader.eventFiles(tb)
        XCTAssertEqual(files.count, 1)
        try assertScalars(files, equal: h)
        let tags = Set(try EventFileReader.events(file: files[0]).flatMap { $0.scalars.map(\.tag) })
        for tag in ["train/loss", "train/grad_norm", "train/learning_rate", "train/epoch", "train/rewards/chosen",
                    "train/rewards/accuracies", "eval/loss", "eval/rewards/accuracies", "train/train_loss", "train/train_runtime"] {
            XCTAssertTrue(tags.contains(tag), tag)
        }
        XCTAssertFalse(tags.contains { $0.hasSuffix("/step") })

        // Resumed from checkpoint-3 into another output directory with the same logging_dir: a
        // second file that replays steps 2 and 3; read after the first (as TensorBoard reads a
        // later file), it shows exactly the resumed history, and so does the file alone.
        let out2 = try makeScratchDirectory()
        let resumed = try TrainingLoop(trainer: try dpoTrainer(maxSteps: 6), args: args(out2), trainDataset: pairs, evalDataset: Array(pairs.prefix(2)))
        _ = try resumed.train(resumeFromCheckpoint: out + "/checkpoint-3")
        let own = try XCTUnwrap((resumed.logSinks.last as? TensorBoardLogSink)?.path)
        XCTAssertEqual(Set(EventFileReader.eventFiles(tb)), Set(files + [own]))
        XCTAssertEqual(Array(resumed.state.logHistory.prefix(2)), Array(h.prefix(2)))
        XCTAssertNotEqual(resumed.state.logHistory, h, "the resumed steps differ in train_runtime at least")
        try assertScalars(files + [own], equal: resumed.state.logHistory)
        try assertScalars([own], equal: resumed.state.logHistory)
    }
}
