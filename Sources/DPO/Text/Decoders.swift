/// The decoders of HF tokenizers the engine implements (tokenizers/src/decoders): they turn the
/// token strings of ids back into text. Each works on the list of token strings, as HF's
/// `decode_chain` does, and the results are joined.
indirect enum TokenDecoder: Equatable, Sendable {
    /// Byte-level alphabet back to bytes, then UTF-8 with invalid sequences as U+FFFD.
    case byteLevel
    /// Replaces a literal string in every token (Llama 2: "▁" -> " ").
    case replace(pattern: String, content: String)
    /// Runs of `<0xXX>` tokens become their bytes (or one U+FFFD per byte if not valid UTF-8).
    case byteFallback
    /// Joins all tokens into one.
    case fuse
    /// Removes up to `start` leading and `stop` trailing `content` characters from every token.
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    /// ▁ back to spaces; in the first token every ▁ is dropped instead (unless the scheme is
    /// "never"), as HF does.
    case metaspace(replacement: Unicode.Scalar, prependScheme: PreTokenizer.PrependScheme)
    case sequence([TokenDecoder])

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for t in tokens {
                if let b = ByteLevel.bytes(of: t) { bytes += b } else { bytes += Array(t.utf8) }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .replace(let pattern, let content):
            let p = Array(pattern.utf8), c = Array(content.utf8)
            return tokens.map { String(decoding: replaceAll(Array($0.utf8), p, c), as: UTF8.self) }
        case .byteFallback:
            var out: [String] = [], pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) { out.append(s) }
                else { out += Array(repeating: "\u{FFFD}", count: pending.count) }
                pending.removeAll()
            }
            for t in tokens {
                if let b = fallbackByte(t) { pending.append(b) } else { flush(); out.append(t) }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { t in
                let chars = Array(t.unicodeScalars)
                var lo = 0
                while lo < min(start, chars.count) && chars[lo] == content { lo += 1 }
                var hi = chars.count
                var cut = 0
                while cut < stop && hi > lo && chars[hi - 1] == content { hi -= 1; cut += 1 }
                var s = String.UnicodeScalarView()
                s.append(contentsOf: chars[lo..<hi])
                return String(s)
            }
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { i, t in
                var s = String.UnicodeScalarView()
                for c in t.unicodeScalars {
                    if c == replacement {
                        if i == 0 && scheme != .never { continue }
                        s.append(" ")
                    } else {
                        s.append(c)
                    }
                }
                return String(s)
            }
        case .sequence(let list):
            var t = tokens
            for d in list { t = d.decodeChain(t) }
            return t
        }
    }
}

/// The byte of a `<0xXX>` token (exactly six bytes, two hex digits), else nil.
func fallbackByte(_ token: String) -> UInt8? {
    let u = Array(token.utf8)
    guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
          u[5] == UInt8(ascii: ">") else { return nil }
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    guard let h = hex(u[3]), let l = hex(u[4]) else { return nil }
    return h << 4 | l
}
