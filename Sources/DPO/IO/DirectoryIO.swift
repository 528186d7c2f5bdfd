// Directory helpers: listing, recursive removal, and the lock that serialises saves.

import Glibc

/// The names in directory `path` (without "." and ".."), as path Strings (SystemPath), or an
/// empty list when it cannot be read.
func listDirectory(_ path: String) -> [String] {
    guard let name = try? cPath(path), let dir = opendir(name) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let entryName = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { SystemPath.string(cString: $0) }
        }
        if entryName != "." && entryName != ".." { names.append(entryName) }
    }
    return names
}

/// Removes a file or a directory tree (like `rm -rf`), not following symlinks. Missing paths are
/// fine; failures are ignored (callers use it to clean up).
func removeTree(_ path: String) {
    guard let name = try? cPath(path) else { return }
    var st = stat()
    guard lstat(name, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        for entry in listDirectory(path) { removeTree(joinPath(path, entry)) }
        cleanupStep()
        rmdir(name)
    } else {
        cleanupStep()
        unlink(name)
    }
}

/// An flock(2) on a directory. Every save that replaces something in a directory holds it
/// exclusively for the whole save, and every load holds it shared while it reads, so that within
/// one directory saves are serialised (two saves to one path cannot mix their files) and a load
/// never sees a save half done. The kernel releases it when the process dies.
final class DirectoryLock {
    private var fd: Int32

    /// Locks the directory `path` (which must exist), exclusively or shared, waiting for it.
    init(_ path: String, exclusive: Bool) throws {
        let name = try cPath(path)
        fd = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open directory", path) }
        do {
            try lock(exclusive: exclusive, path)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Changes a shared lock into an exclusive one (not atomically: another process may take the
    /// lock in between, so callers look again at what they saw under the shared lock).
    func upgrade(_ path: String) throws {
        try lock(exclusive: true, path)
    }

    private func lock(exclusive: Bool, _ path: String) throws {
        while flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0 {
            switch errno {
            case EINTR: continue
            // File systems without flock (some network ones): go on unserialised.
            case ENOLCK, EOPNOTSUPP, EINVAL: return
            default: throw ioError("cannot lock directory", path)
            }
        }
    }

    /// Releases the lock (also done when the object goes away).
    func release() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { release() }
}

/// The start every save shares: `path` with links resolved (`resolvedPath`), its last component
/// checked to name a directory, its parent created, and the parent's lock taken exclusively.
/// `what` names the save in the error ("a checkpoint", "a model").
func lockForSaving(_ path: String, what: String) throws -> (target: String, lock: DirectoryLock) {
    let target = resolvedPath(trimmedPath(path))
    let (parent, name) = splitPath(target)
    guard !name.isEmpty, name != ".", name != ".." else {
        throw DPOError.invalidArgument("cannot save \(what) to '\(path)': give a directory name")
    }
    try makeDirectories(parent)
    return (target, try DirectoryLock(parent, exclusive: true))
}
