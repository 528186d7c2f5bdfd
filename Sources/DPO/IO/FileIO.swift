// Small POSIX file helpers (no Foundation). Every failure is a `DPOError.io` naming the path
// and the system's reason. All system calls are retried on EINTR and short reads/writes.

import Glibc

/// The system's description of an `errno` value, e.g. "No such file or directory".
func errnoDescription(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// A `DPOError.io` for a failed operation on `path`, using the current `errno`.
func ioError(_ what: String, _ path: String, errno code: Int32 = errno) -> DPOError {
    .io("\(what) '\(path)': \(errnoDescription(code))")
}

/// Opens `path` with `open(2)`, retrying on EINTR.
func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
    while true {
        let fd = open(path, flags | O_CLOEXEC, mode)
        if fd >= 0 { return fd }
        if errno != EINTR { throw ioError("cannot open", path) }
    }
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

/// Reads the whole file at `path`.
public func readFile(_ path: String) throws -> [UInt8] {
    let fd = try openFile(path, O_RDONLY)
    defer { close(fd) }
    // Size the buffer from fstat (one spare byte to see end of file in the same pass), but read
    // until end of file rather than trusting the size: the file may change or be a /proc file.
    var bytes = [UInt8](repeating: 0, count: try fileSize(fd, path: path) + 1)
    var used = 0
    while true {
        if used == bytes.count { bytes += [UInt8](repeating: 0, count: Swift.max(bytes.count, 1 << 16)) }
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

/// Whether something (file, directory, ...) exists at `path` (following symlinks).
public func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

/// Whether `path` is a directory (following symlinks).
public func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Creates `path` and any missing parent directories, like `mkdir -p`. Succeeds if it already is a directory.
public func makeDirectories(_ path: String) throws {
    guard !path.isEmpty else { throw DPOError.invalidArgument("makeDirectories: empty path") }
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix += component
        if mkdir(prefix, 0o755) != 0 {
            let code = errno
            if !(code == EEXIST && isDirectory(prefix)) {
                throw ioError("cannot create directory", prefix, errno: code)
            }
        }
        prefix += "/"
    }
}

/// Splits a path into its directory ("." if none) and last component.
func splitPath(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = String(path[..<slash])
    return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
}

/// Joins a directory and a file name with exactly one "/".
func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

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
/// `.<name>.tmp-<pid>` in the same directory, which is then fsync'ed and renamed onto `path`.
/// If anything fails (including `body` throwing) the temporary file is removed, the target is
/// left untouched, and the error is rethrown. (Two writers of the same target in one process at
/// once would share the temporary name; callers do not do that.)
public func writeFileAtomically(_ path: String, _ body: (FileWriter) throws -> Void) throws {
    let (directory, name) = splitPath(path)
    guard !name.isEmpty else { throw DPOError.invalidArgument("cannot write '\(path)': not a file path") }
    let tempPath = joinPath(directory, ".\(name).tmp-\(getpid())")
    var fd = try openFile(tempPath, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
    do {
        try body(FileWriter(fd: fd, path: tempPath))
        while fsync(fd) != 0 {
            if errno != EINTR { throw ioError("cannot fsync", tempPath) }
        }
        let closed = close(fd)
        fd = -1
        // Do not retry close on EINTR: on Linux the descriptor is released regardless.
        if closed != 0 && errno != EINTR { throw ioError("cannot close", tempPath) }
        if rename(tempPath, path) != 0 {
            let code = errno
            throw ioError("cannot rename '\(tempPath)' to", path, errno: code)
        }
    } catch {
        if fd >= 0 { close(fd) }
        unlink(tempPath)
        throw error
    }
    // Make the rename itself durable; failure here does not undo a completed write.
    let dirFd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dirFd >= 0 {
        fsync(dirFd)
        close(dirFd)
    }
}

/// Writes `bytes` to `path` atomically (see `writeFileAtomically(_:_:)`).
public func writeFileAtomically(_ path: String, bytes: [UInt8]) throws {
    try writeFileAtomically(path) { try $0.write(bytes) }
}
