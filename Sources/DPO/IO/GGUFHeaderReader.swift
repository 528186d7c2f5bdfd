// Sequential little-endian reading of a GGUF header through pread(2) in chunks: the header (with
// its metadata, which may be megabytes of tokenizer vocabulary) is parsed without mapping or
// reading the whole file, and every length read from the file is checked against the bytes the
// file still has before anything is allocated for it.

import Glibc

struct GGUFHeaderReader {
    let fd: Int32
    let path: String
    let fileSize: Int
    /// Offset in the file of the next byte to parse.
    private(set) var position = 0
    private var chunk: [UInt8] = []
    private var chunkStart = 0

    static let chunkSize = 1 << 20

    init(fd: Int32, path: String, fileSize: Int) {
        self.fd = fd
        self.path = path
        self.fileSize = fileSize
    }

    /// Bytes left in the file after `position`.
    var remaining: Int { fileSize - position }

    func fail(_ message: String) -> DPOError { .format("\(path): \(message)") }

    /// Makes `[position, position + n)` available in `chunk`, or throws naming `what` when the
    /// file ends before. `n` is checked against the file size before anything is read.
    private mutating func ensure(_ n: Int, _ what: @autoclosure () -> String) throws {
        guard n >= 0, n <= remaining else {
            throw fail("unexpected end of file at byte \(position) reading \(what()) (\(n) bytes needed, \(remaining) left)")
        }
        if position >= chunkStart && position + n <= chunkStart + chunk.count { return }
        let count = Swift.min(Swift.max(n, GGUFHeaderReader.chunkSize), remaining)
        if count > 16 << 20 { try MemoryLimit.check(Double(count), "\(path): reading \(what())") }
        chunk = [UInt8](repeating: 0, count: count)
        try chunk.withUnsafeMutableBytes { try preadFully(fd, $0, offset: position, path: path) }
        chunkStart = position
    }

    /// Reads a little-endian fixed-width integer.
    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let n = MemoryLayout<T>.size
        try ensure(n, what())
        var value: T = 0
        let start = position - chunkStart
        chunk.withUnsafeBytes { raw in
            withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<start + n])) }
        }
        position += n
        return T(littleEndian: value)
    }

    /// Reads `n` raw bytes (n already checked by `ensure`).
    mutating func bytes(_ n: Int, _ what: @autoclosure () -> String) throws -> ArraySlice<UInt8> {
        try ensure(n, what())
        let start = position - chunkStart
        position += n
        return chunk[start..<start + n]
    }

    /// A GGUF string: a UInt64 byte length, then that many bytes of UTF-8. Invalid UTF-8 is
    /// repaired with U+FFFD (Swift's decoding), as a String cannot hold it.
    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let at = position
        let length = try read(UInt64.self, "the length of \(what())")
        guard length <= UInt64(remaining) else {
            throw fail("\(what()) at byte \(at) has length \(length), more than the \(remaining) bytes left in the file")
        }
        return String(decoding: try bytes(Int(length), what()), as: UTF8.self)
    }

    /// Skips to the next multiple of `alignment` (the start of the tensor data).
    mutating func align(to alignment: Int) {
        let rest = position % alignment
        if rest != 0 { position += alignment - rest }
    }
}
