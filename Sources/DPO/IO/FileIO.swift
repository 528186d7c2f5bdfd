// Small POSIX file helpers (no Foundation). Every failure is a `DPOError.io` naming the path
// and the system's reason. All system calls are retried on EINTR and short reads/writes, and
// every path goes to the system as the bytes it stands for (`cPath`, SystemPath.swift).

import Glibc

/// The largest files the engine reads whole into memory, by kind. Weights (safetensors) are not
/// read whole: their size is bounded by their header, checked against the file's size.
public enum FileSizeLimit {
    /// JSON metadata: config.json, model.safetensors.index.json, a checkpoint's
    /// trainer_state.json and manifest.json: 16 MiB.
    public static let json = 16 << 20
    /// Data sets (the `dpo` command's JSONL files) and its metrics.jsonl: 512 MiB.
    public static let dataset = 512 << 20
}

/// The system's description of an `errno` value, e.g. "No such file or directory".
func errnoDescription(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// A `DPOError.io` for a failed operation on `path`, using the current `errno`.
func ioError(_ what: String, _ path: String, errno code: Int32 = errno) -> DPOError {
    .io("\(what) '\(path)': \(errnoDescription(code))")
}

// MARK: - Test hook

/// Tests set this to act at every step of a save (each file creation, write, fsync, rename,
/// unlink, mkdir, rmdir): throw to inject a failure there, or end the process to simulate a kill.
nonisolated(unsafe) var fileOperationHook: (() throws -> Void)? = nil

/// Called before every file system change.
@inline(__always) func fileOperationStep() throws {
    if let hook = fileOperationHook { try hook() }
}

/// Before a clean-up step: a kill may happen there, but an injected failure is ignored (clean-up
/// is best effort; what it leaves is removed by the next save's recovery).
@inline(__always) func cleanupStep() {
    _ = try? fileOperationStep()
}

// MARK: - Unique names

private let nameCounterLock: UnsafeMutablePointer<pthread_mutex_t> = {
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    m.initialize(to: pthread_mutex_t())
    pthread_mutex_init(m, nil)
    return m
}()
nonisolated(unsafe) private var nameCounter: UInt64 = 0

/// A suffix for temporary names that no other call uses at the same time: the process id (other
/// processes), a per-process counter (other threads and calls) and random bits (a reused pid).
func uniqueSuffix() -> String {
    pthread_mutex_lock(nameCounterLock)
    nameCounter += 1
    let n = nameCounter
    pthread_mutex_unlock(nameCounterLock)
    return "\(getpid())-\(n)-\(String(UInt32.random(in: .min ... .max), radix: 16))"
}

/// Whether `entry` is `prefix` followed by a `uniqueSuffix()` (pid-counter-hex): a name only
/// swift-dpo's saves create, so cleaning up after a killed save never touches a user's own
/// `.model.tmp-notes`.
func isUniqueName(_ entry: String, prefix: String) -> Bool {
    guard entry.hasPrefix(prefix) else { return false }
    let parts = entry.utf8.dropFirst(prefix.utf8.count).split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
    func digits(_ p: Substring.UTF8View.SubSequence, hex: Bool) -> Bool {
        !p.isEmpty && p.allSatisfy { (48...57).contains($0) || (hex && (97...102).contains($0)) }
    }
    return parts.count == 3 && digits(parts[0], hex: false) && digits(parts[1], hex: false) && digits(parts[2], hex: true)
}

// MARK: - Opening and reading

/// A description of a file type for messages.
private func fileKind(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a FIFO"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFSOCK: return "a socket"
    default: return "not a regular file"
    }
}

/// Opens the regular file `path` with `open(2)`, retrying on EINTR. Anything else (a FIFO, a
/// device such as /dev/urandom, a directory) is refused: it is opened with O_NONBLOCK so that a
/// FIFO cannot block the open, checked with fstat, and only then is O_NONBLOCK cleared.
func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
    let name = try cPath(path)
    if flags & O_CREAT != 0 { try fileOperationStep() }
    var fd: Int32
    repeat { fd = open(name, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, mode) } while fd < 0 && errno == EINTR
    if fd < 0 { throw ioError("cannot open", path) }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
        let code = errno
        close(fd)
        throw ioError("cannot stat", path, errno: code)
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
        close(fd)
        throw DPOError.io("cannot open '\(path)': it is \(fileKind(st.st_mode)), not a regular file")
    }
    let fileFlags = fcntl(fd, F_GETFL)
    guard fileFlags >= 0, fcntl(fd, F_SETFL, fileFlags & ~O_NONBLOCK) == 0 else {
        let code = errno
        close(fd)
        throw ioError("cannot set flags of", path, errno: code)
    }
    return fd
}

/// Reads exactly `buffer.count` bytes at `offset` of `fd`, retrying on EINTR and short reads.
/// Reaching end of file early is an error (the file was truncated).
func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int, path: String) throws {
    var done = 0
    while done < buffer.count {
        let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n > 0 {
            done += n
        } else if n == 0 {
            throw DPOError.io("cannot read '\(path)': unexpected end of file at byte \(offset + done)")
        } else if errno != EINTR {
            throw ioError("cannot read", path)
        }
    }
}

/// The size in bytes of the open file `fd`.
func fileSize(_ fd: Int32, path: String) throws -> Int {
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ioError("cannot stat", path) }
    if (st.st_mode & S_IFMT) == S_IFDIR { throw DPOError.io("cannot read '\(path)': is a directory") }
    return Int(st.st_size)
}

/// Reads the whole regular file at `path`, refusing one larger than `limit` bytes (see
/// `FileSizeLimit`; the default is the limit for JSON metadata).
public func readFile(_ path: String, limit: Int = FileSizeLimit.json) throws -> [UInt8] {
    let fd = try openFile(path, O_RDONLY)
    defer { close(fd) }
    func tooLarge(_ size: Int) -> DPOError {
        .io("cannot read '\(path)': it is \(size) bytes or more, larger than the limit of \(limit) bytes for this kind of file")
    }
    let size = try fileSize(fd, path: path)
    if size > limit { throw tooLarge(size) }
    // Size the buffer from fstat (one spare byte to see end of file in the same pass), but read
    // until end of file rather than trusting the size: the file may grow or be a /proc file.
    var bytes = [UInt8](repeating: 0, count: size + 1)
    var used = 0
    while true {
        if used > limit { throw tooLarge(used) }
        if used == bytes.count { bytes += [UInt8](repeating: 0, count: Swift.min(Swift.max(bytes.count, 1 << 16), limit + 1)) }
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + used, $0.count - used) }
        if n > 0 {
            used += n
        } else if n == 0 {
            bytes.removeSubrange(used...)
            return bytes
        } else if errno != EINTR {
            throw ioError("cannot read", path)
        }
    }
}

// MARK: - Paths

/// Whether something (file, directory, ...) exists at `path` (following symlinks).
public func fileExists(_ path: String) -> Bool {
    guard let name = try? cPath(path) else { return false }
    var st = stat()
    return stat(name, &st) == 0
}

/// Whether anything, even a dangling symlink, is at `path` (not following a symlink).
func entryExists(_ path: String) -> Bool {
    guard let name = try? cPath(path) else { return false }
    var st = stat()
    return lstat(name, &st) == 0
}

/// Whether `path` is a directory (following symlinks).
public func isDirectory(_ path: String) -> Bool {
    guard let name = try? cPath(path) else { return false }
    var st = stat()
    return stat(name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Creates the directory `path` (its parent must exist).
func makeDirectory(_ path: String) throws {
    let name = try cPath(path)
    try fileOperationStep()
    if mkdir(name, 0o755) != 0 { throw ioError("cannot create directory", path) }
}

/// Creates `path` and any missing parent directories, like `mkdir -p`. Succeeds if it already is a directory.
public func makeDirectories(_ path: String) throws {
    guard !path.isEmpty else { throw DPOError.invalidArgument("makeDirectories: empty path") }
    var prefix = path.unicodeScalars.first == "/" ? "/" : ""
    for component in path.unicodeScalars.split(separator: "/") {
        prefix += String(String.UnicodeScalarView(component))
        if !isDirectory(prefix) {
            let name = try cPath(prefix)
            try fileOperationStep()
            if mkdir(name, 0o755) != 0 {
                let code = errno
                if !(code == EEXIST && isDirectory(prefix)) {
                    throw ioError("cannot create directory", prefix, errno: code)
                }
            }
        }
        prefix += "/"
    }
}

/// `path` without trailing slashes ("/" stays "/").
func trimmedPath(_ path: String) -> String {
    var scalars = path.unicodeScalars
    while scalars.count > 1 && scalars.last == "/" { scalars.removeLast() }
    return String(scalars)
}

/// `path` with symbolic links resolved when it exists (realpath), so that saves through a link and
/// saves to the linked folder lock, stage and clean up in one and the same folder. A path that
/// does not exist (a new save) is returned as given.
func resolvedPath(_ path: String) -> String {
    guard let name = try? cPath(path), let resolved = realpath(name, nil) else { return path }
    defer { free(resolved) }
    return SystemPath.string(cString: resolved)
}

/// Splits a path into its directory ("." if none) and last component. Works on Unicode scalars,
/// not Characters, so that a "/" followed by a combining mark still separates components.
func splitPath(_ path: String) -> (directory: String, name: String) {
    let scalars = path.unicodeScalars
    guard let slash = scalars.lastIndex(of: "/") else { return (".", path) }
    let directory = String(String.UnicodeScalarView(scalars[..<slash]))
    return (directory.isEmpty ? "/" : directory, String(String.UnicodeScalarView(scalars[scalars.index(after: slash)...])))
}

/// Joins a directory and a file name with exactly one "/".
public func joinPath(_ directory: String, _ name: String) -> String {
    directory.unicodeScalars.last == "/" ? directory + name : directory + "/" + name
}

/// Renames `from` to `to` (rename(2)), replacing a file or an empty directory at `to`.
func renamePath(_ from: String, _ to: String) throws {
    let a = try cPath(from), b = try cPath(to)
    try fileOperationStep()
    if rename(a, b) != 0 { throw ioError("cannot rename '\(from)' to", to) }
}

/// Removes the file `path` (a missing one is fine).
func removeFile(_ path: String) throws {
    let name = try cPath(path)
    try fileOperationStep()
    if unlink(name) != 0 && errno != ENOENT { throw ioError("cannot remove", path) }
}

/// fsyncs the directory `path`, making renames and creations in it durable.
func syncDirectory(_ path: String) throws {
    let name = try cPath(path)
    try fileOperationStep()
    let fd = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw ioError("cannot open directory", path) }
    defer { close(fd) }
    while fsync(fd) != 0 {
        // Some file systems cannot fsync a directory; that is not a failure of the save.
        if errno == EINVAL || errno == EROFS { return }
        if errno != EINTR { throw ioError("cannot fsync", path) }
    }
}

// MARK: - Writing

/// A stream of bytes being written to an open file; see `writeFileAtomically`.
public final class FileWriter {
    let fd: Int32
    /// The path of the file actually being written (the temporary file).
    let path: String
    /// The number of bytes written so far.
    public private(set) var bytesWritten = 0

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Writes all of `buffer`, retrying on EINTR and short writes.
    public func write(_ buffer: UnsafeRawBufferPointer) throws {
        try fileOperationStep()
        var done = 0
        while done < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n >= 0 {
                done += n
            } else if errno != EINTR {
                throw ioError("cannot write", path)
            }
        }
        bytesWritten += done
    }

    /// Writes all of `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Writes `text` as UTF-8.
    public func write(_ text: String) throws {
        var text = text
        try text.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }
}

/// Writes the file at `path` atomically: `body` streams the content into a temporary file
/// `.<name>.tmp-<unique>` in the same directory (a name no other call uses at the same time),
/// which is then fsync'ed and renamed onto `path`. If anything fails (including `body` throwing)
/// the temporary file is removed, the target is left untouched, and the error is rethrown.
public func writeFileAtomically(_ path: String, _ body: (FileWriter) throws -> Void) throws {
    let (directory, name) = splitPath(path)
    guard !name.isEmpty else { throw DPOError.invalidArgument("cannot write '\(path)': not a file path") }
    // Only a regular file is replaced: rename(2) would otherwise replace whatever node is at the
    // path (a device such as /dev/null, a FIFO, a socket) with the new file.
    if let c = try? cPath(path) {
        var st = stat()
        if stat(c, &st) == 0 && (st.st_mode & S_IFMT) != S_IFREG {
            throw DPOError.io("cannot write '\(path)': it is \(fileKind(st.st_mode)), not a regular file")
        }
    }
    let tempPath = joinPath(directory, ".\(name).tmp-\(uniqueSuffix())")
    var fd = try openFile(tempPath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
    do {
        try body(FileWriter(fd: fd, path: tempPath))
        try fileOperationStep()
        while fsync(fd) != 0 {
            if errno != EINTR { throw ioError("cannot fsync", tempPath) }
        }
        let closed = close(fd)
        fd = -1
        // Do not retry close on EINTR: on Linux the descriptor is released regardless.
        if closed != 0 && errno != EINTR { throw ioError("cannot close", tempPath) }
        try renamePath(tempPath, path)
    } catch {
        if fd >= 0 { close(fd) }
        cleanupStep()
        if let name = try? cPath(tempPath) { unlink(name) }
        throw error
    }
    // Make the rename itself durable; failure here does not undo a completed write.
    try? syncDirectory(directory)
}

/// Writes `bytes` to `path` atomically (see `writeFileAtomically(_:_:)`).
public func writeFileAtomically(_ path: String, bytes: [UInt8]) throws {
    try writeFileAtomically(path) { try $0.write(bytes) }
}
