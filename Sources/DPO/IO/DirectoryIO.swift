// Directory helpers: listing, recursive removal, and writing a directory by one rename.

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

/// Writes a whole directory atomically: `body` fills a temporary sibling directory, which then
/// replaces `path` by rename (an existing `path` is moved aside first and removed after). On
/// failure the temporary directory is removed and `path` is left as it was.
func writeDirectoryAtomically(_ path: String, _ body: (String) throws -> Void) throws {
    let trimmed = trimmedPath(path)
    let (parent, name) = splitPath(trimmed)
    guard !name.isEmpty, name != ".", name != ".." else {
        throw DPOError.invalidArgument("cannot write directory '\(path)'")
    }
    try makeDirectories(parent)
    let unique = uniqueSuffix()
    let temp = joinPath(parent, ".\(name).tmp-\(unique)")
    let old = joinPath(parent, ".\(name).old-\(unique)")
    do {
        try makeDirectory(temp)
        try body(temp)
        if entryExists(trimmed) { try renamePath(trimmed, old) }
        do {
            try renamePath(temp, trimmed)
        } catch {
            try? renamePath(old, trimmed)
            throw error
        }
        removeTree(old)
    } catch {
        removeTree(temp)
        throw error
    }
}
