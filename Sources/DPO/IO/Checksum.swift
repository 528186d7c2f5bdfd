// CRC-32 (the zlib / PNG polynomial, so `zlib.crc32` or `crc32` tools can check a file by hand)
// of whole files, for the checksums a checkpoint's manifest records; and CRC-32C (Castagnoli), the
// checksum of TFRecord framing in TensorBoard event files.

import Glibc

enum CRC32 {
    /// The byte-at-a-time table of the reflected polynomial 0xEDB88320.
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// Continues a CRC over `bytes` (`crc` starts at 0).
    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }

    /// The size and CRC-32 of the regular file at `path`, read in 1 MiB blocks.
    static func file(_ path: String) throws -> (bytes: Int, crc: UInt32) {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { block.deallocate() }
        var total = 0, crc: UInt32 = 0
        while true {
            let n = read(fd, block.baseAddress!, block.count)
            if n > 0 {
                crc = update(crc, UnsafeRawBufferPointer(rebasing: block[0..<n]))
                total += n
            } else if n == 0 {
                return (total, crc)
            } else if errno != EINTR {
                throw ioError("cannot read", path)
            }
        }
    }
}

/// CRC-32C (Castagnoli, RFC 3720 section B.4): the reflected polynomial 0x82F63B78, initial and
/// final XOR 0xFFFFFFFF, as CRC32 above with another polynomial. Check value: "123456789" ->
/// 0xE3069283.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// Continues a CRC over `bytes` (`crc` starts at 0).
    static func update<Bytes: Sequence>(_ crc: UInt32, _ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var c = ~crc
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }

    /// The CRC-32C of `bytes`.
    static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        update(0, bytes)
    }
}
