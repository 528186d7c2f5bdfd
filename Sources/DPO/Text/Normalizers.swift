/// The normalizers of HF tokenizers the engine implements (tokenizers/src/normalizers): text is
/// normalized per piece, after the non-normalized added tokens are cut out (AddedTokens.swift).
indirect enum Normalizer: Equatable, Sendable {
    /// Prepends the string to non-empty text (Llama 2's "▁").
    case prepend([UInt8])
    /// Replaces every occurrence of a literal string, left to right without overlaps.
    case replace(pattern: [UInt8], content: [UInt8])
    /// Unicode canonical composition (Qwen2).
    case nfc
    case sequence([Normalizer])

    func apply(_ text: [UInt8]) -> [UInt8] {
        switch self {
        case .prepend(let p):
            return text.isEmpty ? text : p + text
        case .replace(let pattern, let content):
            return replaceAll(text, pattern, content)
        case .nfc:
            // Text that is all ASCII, or has no byte of a character that composition could
            // change, is already NFC; otherwise the standard library composes it.
            if text.allSatisfy({ $0 < 0xCC }) { return text }
            // `_nfcCodeUnits` is the standard library's public (underscored) NFC of a String.
            return String(decoding: text, as: UTF8.self)._nfcCodeUnits
        case .sequence(let list):
            var t = text
            for n in list { t = n.apply(t) }
            return t
        }
    }
}

/// `text` with every occurrence of `pattern` (non-empty) replaced by `content`.
func replaceAll(_ text: [UInt8], _ pattern: [UInt8], _ content: [UInt8]) -> [UInt8] {
    guard !pattern.isEmpty, text.count >= pattern.count else { return text }
    var out: [UInt8] = []
    out.reserveCapacity(text.count + content.count)
    var i = 0
    let first = pattern[0]
    while i < text.count {
        if text[i] == first && i + pattern.count <= text.count && text[i..<(i + pattern.count)].elementsEqual(pattern) {
            out += content
            i += pattern.count
        } else {
            out.append(text[i])
            i += 1
        }
    }
    return out
}
