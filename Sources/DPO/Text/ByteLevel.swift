/// GPT-2's byte-level alphabet (`bytes_to_unicode` in openai/gpt-2 encoder.py, `bytes_char` in HF
/// tokenizers' pre_tokenizers/byte_level.rs): every byte is spelled as one printable character, so
/// byte-level vocabularies are written in text. The printable bytes `!`...`~`, `¡`...`¬`, `®`...`ÿ`
/// stand for themselves; the other 68 bytes, in order, become U+0100, U+0101, ...
///
/// The engine runs byte-level BPE on raw bytes and uses this map only to read and write the
/// vocabulary and merges, and when decoding.
enum ByteLevel {
    /// The character (scalar value) that spells each byte.
    static let byteToScalar: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { map[b] = UInt32(b) } else { map[b] = next; next += 1 }
        }
        return map
    }()

    /// The byte each alphabet character stands for, indexed by scalar value (< 324); -1 if none.
    static let scalarToByte: [Int16] = {
        var map = [Int16](repeating: -1, count: 324)
        for (b, s) in byteToScalar.enumerated() { map[Int(s)] = Int16(b) }
        return map
    }()

    /// The byte `scalar` spells, or nil if it is not in the alphabet.
    @inline(__always) static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = Int(scalar.value)
        guard v < scalarToByte.count, scalarToByte[v] >= 0 else { return nil }
        return UInt8(scalarToByte[v])
    }

    /// The raw bytes a vocabulary token spells, or nil if a character is outside the alphabet.
    static func bytes(of token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for s in token.unicodeScalars {
            guard let b = byte(for: s) else { return nil }
            out.append(b)
        }
        return out
    }

    /// `bytes` spelled in the alphabet.
    static func spell(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)]) ?? "?") }
        return String(s)
    }
}
