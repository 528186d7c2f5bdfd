// report_to=["tensorboard"]: log records as TensorBoard scalars, in the event files TensorBoard
// reads (the format is in IO/TensorBoardEvents.swift).

import Glibc
import Synchronization

/// `report_to=["tensorboard"]`: each record's metrics as TensorBoard scalars in an event file of
/// `directory` (`TrainingArguments.resolvedLoggingDir()`), as transformers' `TensorBoardCallback`
/// writes them through PyTorch's `SummaryWriter`: one scalar event per metric, at the record's
/// `step`, tagged by `tag(for:)` (`loss` -> `train/loss`, `eval_loss` -> `eval/loss`); `step`
/// itself is not a scalar (transformers' callbacks get the record without it).
///
/// Each `begin(history:)` is a new writer, as transformers makes one in every `on_train_begin`:
/// a new file `events.out.tfevents.<unix time>.<hostname>.<pid>.<n>` (the name TensorBoard's
/// `EventFileWriter` gives, n counting the files of this process), holding the `file_version`
/// event, a `SessionLog.START` at step 0, then the history's records. Unlike transformers, the
/// history is replayed, and the START event tells TensorBoard to drop what earlier files of the
/// directory hold (it purges every step >= the START's). So, like metrics.jsonl, the run
/// directory shows exactly the run's records: a run resumed into another output directory still
/// has the steps before its checkpoint, and one resumed into the same run directory (an explicit
/// `logging_dir`, or the default one within the same second) does not show the steps the
/// interrupted run logged after the checkpoint twice. Replayed events carry the replay's wall time
/// (records keep none). (TensorBoard reads a directory's files in name order, which is the order
/// they were begun unless the pid or n gains a digit within the same second.)
///
/// Writes append, without fsync: event files are append-only logs that TensorBoard follows while
/// they grow, through the file it has open, so rewriting the file and renaming it into place
/// (JSONLLogSink's way) would hide every later record from a running TensorBoard, and cost a copy
/// of the whole file per record. Instead every append is complete or undone: a record's bytes go
/// out in one write loop (retrying short writes), and if that fails the file is truncated back to
/// the end of the last complete record, so the file never ends in half a record (TensorBoard's
/// reader stops at one). What a crash of the machine may lose is the unsynced tail, which the
/// reader takes as records not yet written; a killed process loses nothing that `write` returned.
///
/// Not thread-safe (one loop, one thread).
public final class TensorBoardLogSink: LogSink {
    /// The run directory (created when needed).
    public let directory: String
    /// The event file being written, nil before `begin(history:)`.
    public private(set) var path: String?
    private var file: FileWriter?
    /// Set when a failed append could not be undone: the file was closed, and only a new
    /// `begin(history:)` writes again.
    private var damaged = false

    public init(directory: String) { self.directory = directory }

    deinit { closeFile() }

    /// transformers' `rewrite_logs`: `eval_x` -> `eval/x`, `test_x` -> `test/x`, any other
    /// `x` -> `train/x` (prefix and slice on Unicode scalars, as Python's, not on Characters).
    public static func tag(for name: String) -> String {
        for group in ["eval", "test"] {
            let prefix = (group + "_").unicodeScalars
            if name.unicodeScalars.starts(with: prefix) {
                return group + "/" + String(String.UnicodeScalarView(name.unicodeScalars.dropFirst(prefix.count)))
            }
        }
        return "train/" + name
    }

    public func begin(history: [LogRecord]) throws {
        closeFile()
        damaged = false
        let now = wallClockSeconds()
        var bytes = TFRecord.frame(TensorBoardEvent.fileVersion(wallTime: now))
        bytes += TFRecord.frame(TensorBoardEvent.sessionStart(wallTime: now, step: 0))
        for record in history { bytes += try events(record, wallTime: now) }
        try makeDirectories(directory)
        let name = "events.out.tfevents.\(paddedSeconds(now)).\(hostName()).\(getpid()).\(eventFileCounter.add(1, ordering: .relaxed).oldValue)"
        let filePath = joinPath(directory, name)
        let fd = try openFile(filePath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        file = FileWriter(fd: fd, path: filePath)
        path = filePath
        try append(bytes)
    }

    public func write(_ record: LogRecord) throws {
        try append(try events(record, wallTime: wallClockSeconds()))
    }

    /// The framed scalar events of `record`, names sorted.
    private func events(_ record: LogRecord, wallTime: Double) throws -> [UInt8] {
        guard let s = record["step"], let step = Int64(exactly: s) else {
            throw DPOError.invalidArgument("tensorboard: a log record needs an integral 'step', got \(record["step"].map { "\($0)" } ?? "none")")
        }
        var bytes: [UInt8] = []
        for (name, value) in record.sorted(by: { $0.key < $1.key }) where name != "step" {
            // float32, as SummaryWriter's simple_value
            bytes += TFRecord.frame(TensorBoardEvent.scalar(wallTime: wallTime, step: step, tag: Self.tag(for: name), value: Float(value)))
        }
        return bytes
    }

    /// Appends whole records, or nothing (see the type's comment).
    private func append(_ bytes: [UInt8]) throws {
        guard let out = file else {
            throw DPOError.wrongState(damaged
                ? "tensorboard: the event file '\(path ?? directory)' was closed after a write failed; a new train() starts a new one"
                : "tensorboard: write(_:) before begin(history:)")
        }
        let end = out.bytesWritten
        do {
            try out.write(bytes)
        } catch {
            if ftruncate(out.fd, off_t(end)) != 0 || lseek(out.fd, off_t(end), SEEK_SET) != off_t(end) {
                closeFile()
                damaged = true
            }
            throw error
        }
    }

    private func closeFile() {
        if let f = file { close(f.fd) }
        file = nil
    }
}

/// The files this process has begun, for their names (TensorBoard's `_global_uid`).
private let eventFileCounter = Atomic<Int>(0)

/// Seconds since the Unix epoch (`time.time()`).
func wallClockSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Python's `"%010d" % t`.
private func paddedSeconds(_ t: Double) -> String {
    let s = String(Int(t.rounded(.down)))
    return String(repeating: "0", count: max(0, 10 - s.count)) + s
}

/// `socket.gethostname()`, with any "/" replaced so that it stays one path component.
func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, 255) == 0 else { return "localhost" }
    return SystemPath.string(cString: buffer).replacingSlashes()
}

private extension String {
    func replacingSlashes() -> String {
        String(String.UnicodeScalarView(unicodeScalars.map { $0 == "/" ? "_" : $0 }))
    }
}
