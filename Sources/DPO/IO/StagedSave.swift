// All-or-nothing saves of a group of files (a model's config.json + model.safetensors), safe
// against a kill at any point.
//
// A new directory is written whole beside its final path, under a unique temporary name, and
// renamed into place: one rename, so the path holds nothing or everything.
//
// An existing directory cannot be replaced that way: it may hold the user's other files (a
// tokenizer, a README). The new files are written into a staging folder inside it,
// `.swift-dpo-save-<unique>/`, and fsync'ed; then the marker file `COMMITTED` is written into the
// staging folder. That is the commit point: before it, a failure or a kill leaves the old files in
// place (an uncommitted staging folder is just removed); after it, the staged files are moved over
// the old ones one rename at a time. A kill during those renames leaves a committed staging
// folder, and the next load or save of the directory (`recoverStagedSaves`, under the directory
// lock) completes the renames first, so no swift-dpo load ever reads a mixed pair. (Another
// program reading the directory in that window could; the next swift-dpo load or save repairs it.)

let stagingPrefix = ".swift-dpo-save-"
let commitMarker = "COMMITTED"

/// Saves files into `directory` all-or-nothing (the whole protocol of this file): takes the
/// parent's save lock, clears temporaries of a killed save, then either replaces the files `body`
/// writes in an existing directory (other files are left as they are) or makes the directory
/// whole by one rename. `what` names the thing saved in errors ("a model", "a LoRA adapter").
func saveDirectoryAllOrNothing(_ directory: String, what: String, _ body: (String) throws -> Void) throws {
    let (path, lock) = try lockForSaving(directory, what: what)
    defer { lock.release() }
    removeTemporarySiblings(of: path)
    if isDirectory(path) {
        try recoverStagedSaves(in: path)
        try replaceFiles(in: path, body)
    } else if entryExists(path) {
        throw DPOError.io("cannot save \(what) to '\(directory)': it exists and is not a directory")
    } else {
        try writeNewDirectory(path, body)
    }
}

/// Creates the directory `path`, which must not exist, all-or-nothing: `body` fills a temporary
/// sibling `.<name>.tmp-<unique>`, which is fsync'ed and renamed to `path`. On failure the
/// temporary directory is removed and nothing appears at `path`. The caller holds the lock of the
/// parent directory.
func writeNewDirectory(_ path: String, _ body: (String) throws -> Void) throws {
    let (parent, name) = splitPath(path)
    let temp = joinPath(parent, ".\(name).tmp-\(uniqueSuffix())")
    try makeDirectory(temp)
    do {
        try body(temp)
        try syncDirectory(temp)
        try renamePath(temp, path)
    } catch {
        removeTree(temp)
        throw error
    }
    try? syncDirectory(parent)
}

/// Removes what killed saves left beside `path` in its parent: `.<name>.tmp-*` folders or files.
/// The caller holds the parent's lock exclusively, so no live save owns them.
func removeTemporarySiblings(of path: String) {
    let (parent, name) = splitPath(path)
    for entry in listDirectory(parent) where isUniqueName(entry, prefix: ".\(name).tmp-") {
        removeTree(joinPath(parent, entry))
    }
}

/// Replaces files in the existing directory `directory` all-or-nothing (see the top of this
/// file): `body` writes the new files, by their final names, into the staging folder it is given.
/// A failure before the commit point changes nothing and is thrown; once committed the save has
/// happened, and if moving the files into place fails the next load or save finishes it. The
/// caller holds the lock of `directory`'s parent exclusively.
func replaceFiles(in directory: String, _ body: (String) throws -> Void) throws {
    let staging = joinPath(directory, stagingPrefix + uniqueSuffix())
    try makeDirectory(staging)
    do {
        try body(staging)
        // A name taken by a directory (or another non-file) cannot be replaced by a rename:
        // refuse before the commit point rather than commit a save that cannot complete.
        for name in listDirectory(staging) where !name.hasPrefix(".") {
            let target = joinPath(directory, name)
            if isDirectory(target) {
                throw DPOError.io("cannot save into '\(directory)': '\(name)' there is a directory, not a file")
            }
        }
        try syncDirectory(staging)
        try writeFileAtomically(joinPath(staging, commitMarker), bytes: Array("swift-dpo save\n".utf8))
    } catch {
        removeTree(staging)
        throw error
    }
    try? finishStagedSave(staging, into: directory)
}

/// Moves the staged files of the committed staging folder `staging` over their namesakes in
/// `directory`, then removes the folder. Repeatable: files already moved are simply absent.
private func finishStagedSave(_ staging: String, into directory: String) throws {
    for name in listDirectory(staging) where name != commitMarker && !name.hasPrefix(".") {
        try renamePath(joinPath(staging, name), joinPath(directory, name))
    }
    try syncDirectory(directory)
    try removeFile(joinPath(staging, commitMarker))
    removeTree(staging)
}

/// Whether `directory` holds staging folders of interrupted saves.
func hasStagedSaves(in directory: String) -> Bool {
    listDirectory(directory).contains { isUniqueName($0, prefix: stagingPrefix) }
}

/// Completes the committed saves in `directory` and removes uncommitted ones. The caller holds
/// the lock of `directory`'s parent exclusively, so no live save owns them.
func recoverStagedSaves(in directory: String) throws {
    for name in listDirectory(directory) where isUniqueName(name, prefix: stagingPrefix) {
        let staging = joinPath(directory, name)
        if entryExists(joinPath(staging, commitMarker)) {
            try finishStagedSave(staging, into: directory)
        } else {
            removeTree(staging)
        }
    }
}

/// The lock a model load holds while it reads `directory`: its parent's, shared. If an
/// interrupted save left staging folders, they are first recovered under the exclusive lock
/// (which needs write permission on the directory). A missing directory gets no lock; the
/// load then reports it.
func lockModelDirectoryForLoading(_ directory: String) throws -> DirectoryLock? {
    let path = resolvedPath(trimmedPath(directory))
    guard isDirectory(path) else { return nil }
    let lock = try DirectoryLock(splitPath(path).directory, exclusive: false)
    if hasStagedSaves(in: path) {
        try lock.upgrade(splitPath(path).directory)
        try recoverStagedSaves(in: path)
    }
    return lock
}
