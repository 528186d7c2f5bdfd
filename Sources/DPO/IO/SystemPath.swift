// Paths travel through the engine as Swift `String`s, but a Linux path is a string of bytes that
// need not be UTF-8, and `String(cString:)` replaces invalid bytes with U+FFFD: two different
// paths would become one (a save to one would overwrite the other). So a host's path bytes are
// turned into a String losslessly, and every system call on a path (FileIO, DirectoryIO) turns
// the String back into exactly those bytes with `cPath`.
//
// The encoding: valid UTF-8 is kept as it is, and each byte of an invalid sequence b (0x80-0xFF)
// becomes the private-use scalar U+10FF00 + b (U+10FF80-U+10FFFF). So that the encoding stays
// one-to-one, a path that really contains one of those 128 scalars has each of its UTF-8 bytes
// escaped the same way. `cPath` maps every scalar of that range back to its single byte. For any
// path that is valid UTF-8 without those scalars (every path in practice) the String is the
// ordinary one, so Swift callers pass ordinary Strings.

import Glibc

/// The lossless conversion between path bytes and the engine's `String` paths.
public enum SystemPath {
    /// An escaped byte b is the scalar `escapeBase + b`; escaped scalars are U+10FF80...U+10FFFF.
    static let escapeBase: UInt32 = 0x10FF00
    static let escapeRange: ClosedRange<UInt32> = 0x10FF80...0x10FFFF

    /// The path String for the bytes of `bytes` (no NUL).
    public static func string<Bytes: Collection>(bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var scalars = String.UnicodeScalarView()
        var parser = Unicode.UTF8.ForwardParser()
        var input = bytes.makeIterator()
        var raw = Array(bytes)[...]
        func escape(_ byte: UInt8) {
            scalars.append(Unicode.Scalar(escapeBase + UInt32(byte))!)
        }
        loop: while true {
            switch parser.parseScalar(from: &input) {
            case .valid(let encoded):
                let scalar = Unicode.UTF8.decode(encoded)
                if escapeRange.contains(scalar.value) {
                    raw.prefix(encoded.count).forEach(escape)
                } else {
                    scalars.append(scalar)
                }
                raw = raw.dropFirst(encoded.count)
            case .error(let length):
                // Bytes of an invalid sequence are never ASCII, so each is in 0x80...0xFF.
                raw.prefix(length).forEach(escape)
                raw = raw.dropFirst(length)
            case .emptyInput:
                break loop
            }
        }
        return String(scalars)
    }

    /// The path String for the NUL-terminated bytes at `cString`.
    public static func string(cString: UnsafePointer<CChar>) -> String {
        let count = strlen(cString)
        return cString.withMemoryRebound(to: UInt8.self, capacity: count) {
            string(bytes: UnsafeBufferPointer(start: $0, count: count))
        }
    }

    /// The bytes `path` stands for (the inverse of `string(bytes:)`).
    public static func bytes(_ path: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(path.utf8.count)
        for scalar in path.unicodeScalars {
            if escapeRange.contains(scalar.value) {
                out.append(UInt8(scalar.value - escapeBase))
            } else {
                out += String(scalar).utf8
            }
        }
        return out
    }
}

/// The NUL-terminated bytes of `path` for a system call. A path with a NUL in it cannot be
/// passed to the system (it would name a shorter path), so it is refused.
func cPath(_ path: String) throws -> [CChar] {
    let bytes = SystemPath.bytes(path)
    if bytes.contains(0) { throw DPOError.invalidArgument("path '\(path)' contains a NUL byte") }
    return bytes.map { CChar(bitPattern: $0) } + [0]
}
