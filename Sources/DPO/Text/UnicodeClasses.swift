/// Character classes of the pre-tokenizer regexes, as Oniguruma (HF tokenizers' regex engine)
/// defines them for Unicode text: `\p{L}` is general category L*, `\p{N}` is N* (Nd, Nl, No), `\s`
/// is the White_Space property (U+0009...U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000...U+200A,
/// U+2028, U+2029, U+202F, U+205F, U+3000). Everything else is `other`.
enum CharClass: UInt8 {
    case letter, number, whitespace, other
}

enum UnicodeClasses {
    /// The classes of the ASCII characters.
    private static let ascii: [CharClass] = (0..<128).map { b -> CharClass in
        switch b {
        case 0x41...0x5A, 0x61...0x7A: return .letter
        case 0x30...0x39: return .number
        case 0x09...0x0D, 0x20: return .whitespace
        default: return .other
        }
    }

    @inline(__always) static func charClass(_ v: UInt32) -> CharClass {
        if v < 128 { return ascii[Int(v)] }
        guard let s = Unicode.Scalar(v) else { return .other }
        let p = s.properties
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return p.isWhitespace ? .whitespace : .other
        }
    }

    /// Rust's `char::is_numeric` (general category Nd, Nl or No): HF's `Digits` pre-tokenizer.
    @inline(__always) static func isNumeric(_ v: UInt32) -> Bool { charClass(v) == .number }

    /// The Rust `regex` crate's `\s` (White_Space), used by added-token stripping.
    static func isSpace(_ v: UInt32) -> Bool { charClass(v) == .whitespace }

    /// The Rust `regex` crate's `\w`: Alphabetic, marks, decimal numbers, connector punctuation,
    /// Join_Control. Used by added tokens with `single_word`.
    static func isWord(_ v: UInt32) -> Bool {
        guard let s = Unicode.Scalar(v) else { return false }
        let p = s.properties
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return p.isAlphabetic || p.isJoinControl
        }
    }
}

/// Decodes the UTF-8 scalar starting at `i` of `bytes` (which ends at `end`): its value and byte
/// length. Text here comes from Swift strings, so it is valid UTF-8; a malformed byte still decodes,
/// as U+FFFD of length 1, so no input can make a scan stop or trap.
@inline(__always)
func decodeScalar(_ bytes: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (value: UInt32, length: Int) {
    let b0 = UInt32(bytes[i])
    if b0 < 0x80 { return (b0, 1) }
    func cont(_ k: Int) -> UInt32? {
        guard i + k < end else { return nil }
        let b = bytes[i + k]
        return b & 0xC0 == 0x80 ? UInt32(b & 0x3F) : nil
    }
    if b0 & 0xE0 == 0xC0, let c1 = cont(1) { return ((b0 & 0x1F) << 6 | c1, 2) }
    if b0 & 0xF0 == 0xE0, let c1 = cont(1), let c2 = cont(2) { return ((b0 & 0x0F) << 12 | c1 << 6 | c2, 3) }
    if b0 & 0xF8 == 0xF0, let c1 = cont(1), let c2 = cont(2), let c3 = cont(3) {
        return ((b0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3, 4)
    }
    return (0xFFFD, 1)
}
