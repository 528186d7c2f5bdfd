#if canImport(Glibc)
import Glibc
#endif

/// Removes a file or a directory tree (like `rm -rf`). Missing paths are fine.
func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        if let dir = opendir(path) {
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { removeTree(joinPath(path, name)) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Writes a whole directory atomically: `body` fills a temporary sibling directory, which then
/// replaces `path` by rename (an existing `path` is moved aside first and removed after). On
/// failure the temporary directory is removed and `path` is left as it was.
func writeDirectoryAtomically(_ path: String, _ body: (String) throws -> Void) throws {
    var trimmed = path
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
    let (parent, name) = splitPath(trimmed)
    guard !name.isEmpty, name != ".", name != ".." else {
        throw DPOError.invalidArgument("cannot write directory '\(path)'")
    }
    try makeDirectories(parent)
    let temp = joinPath(parent, ".\(name).tmp-\(getpid())")
    let old = joinPath(parent, ".\(name).old-\(getpid())")
    removeTree(temp)
    do {
        try makeDirectories(temp)
        try body(temp)
        if fileExists(trimmed) || isDirectory(trimmed) {
            removeTree(old)
            if rename(trimmed, old) != 0 { throw ioError("cannot move aside", trimmed) }
        }
        if rename(temp, trimmed) != 0 {
            let code = errno
            _ = rename(old, trimmed)
            throw ioError("cannot rename '\(temp)' to", trimmed, errno: code)
        }
        removeTree(old)
    } catch {
        removeTree(temp)
        throw error
    }
}
