/// The pre-tokenizers of HF tokenizers the engine implements (tokenizers/src/pre_tokenizers):
/// they cut normalized text into words, which the model then encodes one by one.
indirect enum PreTokenizer: Equatable, Sendable {
    /// `Split(Regex(pattern), behavior: Isolated, invert: false)` with a pattern the engine knows.
    case split(SplitPattern)
    /// `ByteLevel`: optionally a leading space, then (with `useRegex`) GPT-2's regex. The mapping of
    /// bytes to the byte-level alphabet is implicit: byte-level models work on raw bytes.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// `Digits`: each numeric character alone (`individual`) or runs of them, as their own words.
    case digits(individual: Bool)
    /// `Metaspace`: spaces become `replacement` (▁), which is prepended per `prependScheme`;
    /// with `split`, every ▁ starts a new word.
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme, split: Bool)
    case sequence([PreTokenizer])

    enum PrependScheme: String, Sendable { case always, first, never }

    /// Whether the pre-tokenizer (or one in its sequence) is `ByteLevel`.
    var isByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case .sequence(let list): return list.contains { $0.isByteLevel }
        default: return false
        }
    }
}

/// Words in one byte buffer: `storage` and the ranges of the words, each with whether it starts
/// the original text (Metaspace's "first" scheme prepends only there).
struct Words {
    var storage: [UInt8]
    var ranges: [Range<Int>]
    var startsText: [Bool]

    init(_ text: [UInt8], startsText: Bool) {
        storage = text
        ranges = text.isEmpty ? [] : [0..<text.count]
        self.startsText = text.isEmpty ? [] : [startsText]
    }

    /// Replaces every word by the sub-ranges `cut` returns for it (in order, within the word).
    mutating func split(_ cut: (UnsafeBufferPointer<UInt8>, Range<Int>, inout [Range<Int>]) -> Void) {
        var newRanges: [Range<Int>] = [], newFirst: [Bool] = []
        newRanges.reserveCapacity(ranges.count * 2)
        storage.withUnsafeBufferPointer { buf in
            var parts: [Range<Int>] = []
            for (k, r) in ranges.enumerated() {
                parts.removeAll(keepingCapacity: true)
                cut(buf, r, &parts)
                for p in parts where !p.isEmpty {
                    newRanges.append(p)
                    newFirst.append(startsText[k] && p.lowerBound == r.lowerBound)
                }
            }
        }
        ranges = newRanges
        startsText = newFirst
    }

    /// Replaces every word by `transform` of its bytes, in a new buffer.
    mutating func transform(_ transform: ([UInt8], Bool) -> [UInt8]) {
        var newStorage: [UInt8] = [], newRanges: [Range<Int>] = []
        for (k, r) in ranges.enumerated() {
            let t = transform(Array(storage[r]), startsText[k])
            newRanges.append(newStorage.count..<(newStorage.count + t.count))
            newStorage += t
        }
        storage = newStorage
        ranges = newRanges
    }
}

extension PreTokenizer {
    func apply(_ words: inout Words) {
        switch self {
        case .split(let pattern):
            words.split { buf, r, out in pattern.split(buf, r.lowerBound, r.upperBound, into: &out) }
        case .byteLevel(let addPrefixSpace, let useRegex):
            if addPrefixSpace {
                words.transform { w, _ in w.first == 0x20 ? w : [0x20] + w }
            }
            if useRegex {
                words.split { buf, r, out in SplitPattern.gpt2.split(buf, r.lowerBound, r.upperBound, into: &out) }
            }
        case .digits(let individual):
            words.split { buf, r, out in splitDigits(buf, r, individual: individual, into: &out) }
        case .metaspace(let replacement, let scheme, let split):
            let rep = Array(String(replacement).utf8)
            words.transform { w, startsText in
                var t = replaceAll(w, [0x20], rep)
                let starts = t.starts(with: rep)
                if !starts && (scheme == .always || (scheme == .first && startsText)) { t = rep + t }
                return t
            }
            if split {
                words.split { buf, r, out in
                    // MergedWithNext: every replacement character starts a new word.
                    var start = r.lowerBound, i = r.lowerBound
                    while i < r.upperBound {
                        if i > start && i + rep.count <= r.upperBound && (0..<rep.count).allSatisfy({ buf[i + $0] == rep[$0] }) {
                            out.append(start..<i)
                            start = i
                        }
                        i += 1
                    }
                    out.append(start..<r.upperBound)
                }
            }
        case .sequence(let list):
            for p in list { p.apply(&words) }
        }
    }
}

/// HF `Digits`: numeric characters (general category N) isolated one by one, or as runs.
private func splitDigits(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, individual: Bool, into out: inout [Range<Int>]) {
    var i = r.lowerBound, start = r.lowerBound
    var inRun = false
    while i < r.upperBound {
        let (v, n) = decodeScalar(b, i, r.upperBound)
        let numeric = UnicodeClasses.isNumeric(v)
        if numeric {
            if individual {
                if start < i { out.append(start..<i) }
                out.append(i..<(i + n))
                start = i + n
            } else if !inRun {
                if start < i { out.append(start..<i) }
                start = i
            }
        } else if inRun && !individual {
            out.append(start..<i)
            start = i
        }
        inRun = numeric
        i += n
    }
    if start < r.upperBound { out.append(start..<r.upperBound) }
}
