// Trainer checkpoint directories on disk: written all-or-nothing even under kill -9, replacing
// only what is recognisably a swift-dpo checkpoint, and verified against a manifest on load.
//
// A save (holding the parent directory's lock exclusively):
//   1. recovers the path from what an earlier killed save left (see `recoverCheckpointPath`);
//   2. refuses unless the path is free, an empty directory or a swift-dpo checkpoint;
//   3. writes the new checkpoint into `.<name>.tmp-<unique>` beside it, and last its
//      `manifest.json` (size and CRC-32 of every file), which marks the folder complete;
//   4. moves an existing checkpoint aside to `.<name>.old-<unique>`, renames the new one into
//      place, and removes the old one.
// A kill between the two renames of step 4 leaves no checkpoint at the path; the next save or
// load of it puts the old one back (or, if there was none, the complete new one). A discarded
// folder loses its manifest first, so a half-removed folder is never taken for a complete one.

import Glibc

/// The file, written last, that lists every other file of a checkpoint with its size and CRC-32.
let manifestName = "manifest.json"
private let manifestFormat = "swift-dpo-checkpoint-manifest"

/// Writes the checkpoint directory `path` all-or-nothing (see the top of this file): `body`
/// fills the folder it is given. `isCheckpoint` tells whether an existing directory is a
/// checkpoint that may be replaced.
func writeCheckpointDirectory(_ path: String, isCheckpoint: (String) -> Bool,
                              _ body: (String) throws -> Void) throws {
    let (target, lock) = try lockForSaving(path, what: "a checkpoint")
    defer { lock.release() }
    let (parent, name) = splitPath(target)
    try recoverCheckpointPath(target)
    try checkReplaceable(target, isCheckpoint: isCheckpoint)

    let temp = joinPath(parent, ".\(name).tmp-\(uniqueSuffix())")
    try makeDirectory(temp)
    do {
        try body(temp)
        try writeManifest(temp)
        try syncDirectory(temp)
    } catch {
        discardCheckpointFolder(temp)
        throw error
    }
    var old: String? = nil
    do {
        if entryExists(target) {
            old = joinPath(parent, ".\(name).old-\(uniqueSuffix())")
            try renamePath(target, old!)
        }
        try renamePath(temp, target)
    } catch {
        // Put the old checkpoint back; if even that fails, the next save or load does it.
        if let old, !entryExists(target), let a = try? cPath(old), let b = try? cPath(target) {
            cleanupStep()
            _ = rename(a, b)
        }
        discardCheckpointFolder(temp)
        throw error
    }
    try? syncDirectory(parent)
    if let old { discardCheckpointFolder(old) }
}

/// Runs `body` (which reads the checkpoint at `path`) holding the parent directory's lock
/// shared, after recovering the path from an interrupted save if needed.
func readCheckpointDirectory<T>(_ path: String, _ body: () throws -> T) throws -> T {
    let target = resolvedPath(trimmedPath(path))
    let (parent, name) = splitPath(target)
    guard isDirectory(parent) else { throw DPOError.io("no checkpoint at '\(path)': '\(parent)' is not a directory") }
    let lock = try DirectoryLock(parent, exclusive: false)
    defer { lock.release() }
    let leftovers = listDirectory(parent).contains { isUniqueName($0, prefix: ".\(name).tmp-") || isUniqueName($0, prefix: ".\(name).old-") }
    if leftovers {
        try lock.upgrade(parent)
        try recoverCheckpointPath(target)
    }
    return try body()
}

/// Puts a checkpoint back at `target` if a killed save left it missing, then removes every
/// `.<name>.tmp-*` and `.<name>.old-*` beside it. The caller holds the parent's lock exclusively.
func recoverCheckpointPath(_ target: String) throws {
    let (parent, name) = splitPath(target)
    let entries = listDirectory(parent).sorted()
    let old = entries.filter { isUniqueName($0, prefix: ".\(name).old-") }
    let new = entries.filter { isUniqueName($0, prefix: ".\(name).tmp-") }
    if !entryExists(target) {
        // The save that moved the old checkpoint aside never returned success: prefer the old one.
        let complete = { (entry: String) in entryExists(joinPath(joinPath(parent, entry), manifestName)) }
        if let restore = old.first(where: complete) ?? new.first(where: complete) {
            try renamePath(joinPath(parent, restore), target)
            try syncDirectory(parent)
        }
    }
    for entry in old + new where entryExists(joinPath(parent, entry)) {
        discardCheckpointFolder(joinPath(parent, entry))
    }
}

/// Removes a checkpoint folder, its manifest first (so it never looks complete half removed).
private func discardCheckpointFolder(_ path: String) {
    cleanupStep()
    if let name = try? cPath(joinPath(path, manifestName)) { unlink(name) }
    removeTree(path)
}

/// Throws unless `target` is free, an empty directory or a checkpoint (`isCheckpoint`).
private func checkReplaceable(_ target: String, isCheckpoint: (String) -> Bool) throws {
    guard entryExists(target) else { return }
    guard isDirectory(target) else {
        throw DPOError.io("cannot write a checkpoint to '\(target)': it exists and is not a directory")
    }
    if listDirectory(target).isEmpty || isCheckpoint(target) { return }
    throw DPOError.io("cannot write a checkpoint to '\(target)': it is a directory that is neither empty nor a swift-dpo checkpoint, and it is not replaced")
}

// MARK: - Manifest

/// The relative paths of the regular files under `directory`, recursively (not following symlinks).
private func filesUnder(_ directory: String, prefix: String = "") -> [String] {
    var out: [String] = []
    for entry in listDirectory(directory).sorted() {
        let full = joinPath(directory, entry)
        if isDirectory(full) {
            out += filesUnder(full, prefix: prefix + entry + "/")
        } else {
            out.append(prefix + entry)
        }
    }
    return out
}

/// Writes `manifest.json` into the finished checkpoint folder `directory`: every file's size
/// and CRC-32, read back from the disk.
func writeManifest(_ directory: String) throws {
    var files = JSONObject()
    for relative in filesUnder(directory) where relative != manifestName {
        let (bytes, crc) = try CRC32.file(joinPath(directory, relative))
        files[relative] = .object(["bytes": .number(Double(bytes)), "crc32": .number(Double(crc))])
    }
    let manifest: JSONObject = ["format": .string(manifestFormat), "version": .number(1), "files": .object(files)]
    try writeFileAtomically(joinPath(directory, manifestName),
                            bytes: Array((JSON.serialize(.object(manifest)) + "\n").utf8))
}

/// Checks every file the manifest of checkpoint `directory` lists: present, of the recorded
/// size and CRC-32. A checkpoint without a manifest, or whose manifest does not list
/// `required` files, is refused.
func verifyManifest(_ directory: String, required: [String]) throws {
    let path = joinPath(directory, manifestName)
    func fail(_ m: String) -> DPOError { .format("checkpoint '\(directory)': \(m)") }
    guard entryExists(path) else { throw fail("no \(manifestName) (incomplete, or not written by this version of swift-dpo)") }
    let json: JSONValue
    do { json = try JSON.parse(try readFile(path)) } catch DPOError.format(let m) { throw fail("\(manifestName): \(m)") }
    guard let manifest = json.object, manifest["format"]?.string == manifestFormat, manifest["version"]?.int == 1,
          let files = manifest["files"]?.object else {
        throw fail("\(manifestName) is not a swift-dpo checkpoint manifest of version 1")
    }
    for name in required where files[name] == nil { throw fail("\(manifestName) does not list \(name)") }
    for relative in files.keys {
        let components = relative.unicodeScalars.split(separator: "/", omittingEmptySubsequences: false)
        guard !relative.hasPrefix("/"), components.allSatisfy({ !$0.isEmpty && String(String.UnicodeScalarView($0)) != ".." }) else {
            throw fail("\(manifestName) lists an invalid path '\(relative)'")
        }
        guard let entry = files[relative]?.object, let bytes = entry["bytes"]?.int,
              let crc = entry["crc32"]?.int, crc >= 0, crc <= Int(UInt32.max) else {
            throw fail("\(manifestName): bad entry for '\(relative)'")
        }
        let actual = try CRC32.file(joinPath(directory, relative))
        guard actual.bytes == bytes else {
            throw fail("\(relative) is \(actual.bytes) bytes, the manifest records \(bytes): the file is damaged")
        }
        guard actual.crc == UInt32(crc) else {
            throw fail("\(relative) does not match the checksum in the manifest: the file is damaged")
        }
    }
}

/// Removes the checkpoint directory `path` (holding its parent's lock): only a swift-dpo trainer
/// checkpoint (`isCheckpoint`) is removed, its manifest first; anything else is an error.
func removeCheckpointDirectory(_ path: String, isCheckpoint: (String) -> Bool) throws {
    let (target, lock) = try lockForSaving(path, what: "a checkpoint")
    defer { lock.release() }
    guard isDirectory(target), isCheckpoint(target) else {
        throw DPOError.io("'\(target)' is not a swift-dpo checkpoint; it is not removed")
    }
    discardCheckpointFolder(target)
}
