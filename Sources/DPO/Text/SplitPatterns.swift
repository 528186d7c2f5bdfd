/// The pre-tokenizer regexes the engine knows, recognised by their exact pattern string and
/// matched by hand (no regex engine). Each splits a piece of text into consecutive matches, as
/// HF tokenizers' `Split(Regex(pattern), behavior: Isolated)` does with Oniguruma: at each position
/// the alternatives are tried in order and the first that matches is taken (with the regex's
/// backtracking worked out by hand below). Character classes: UnicodeClasses.swift.
enum SplitPattern: String, Sendable {
    /// GPT-2's, also ByteLevel's built-in regex (`use_regex: true`); llama.cpp "gpt2", "smollm".
    case gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    /// Llama 3's; llama.cpp "llama-bpe".
    case llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// Qwen2's (Llama 3's with single digits); llama.cpp "qwen2".
    case qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Appends the matches of the pattern in `bytes[start..<end]` to `out`, in order. The
    /// matches cover the range without gaps (every alternative set ends in `\s+` or a class that
    /// takes any character), so Isolated splitting is just the list of matches.
    func split(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, into out: inout [Range<Int>]) {
        var i = start
        while i < end {
            let next: Int
            switch self {
            case .gpt2: next = SplitPattern.matchGPT2(bytes, i, end)
            case .llama3: next = SplitPattern.matchLlama3(bytes, i, end, maxDigits: 3)
            case .qwen2: next = SplitPattern.matchLlama3(bytes, i, end, maxDigits: 1)
            }
            // Every match takes at least one character; the guard keeps a scan from stalling.
            let stop = next > i ? next : i + 1
            out.append(i..<min(stop, end))
            i = stop
        }
    }

    // MARK: - Helpers

    @inline(__always) private static func scalar(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (UInt32, Int, CharClass) {
        let (v, n) = decodeScalar(b, i, end)
        return (v, n, UnicodeClasses.charClass(v))
    }

    /// The end of the run of characters of class `cls` starting at `i`.
    @inline(__always) private static func run(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, _ cls: CharClass) -> Int {
        var j = i
        while j < end {
            let (_, n, c) = scalar(b, j, end)
            if c != cls { break }
            j += n
        }
        return j
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `i` (which holds an apostrophe): the end of the match, or nil.
    /// With `ignoreCase`, letters match in either case, and `s` also matches U+017F (ſ), which
    /// Unicode case folding maps to `s`.
    @inline(__always) private static func contraction(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, ignoreCase: Bool) -> Int? {
        guard i + 1 < end else { return nil }
        @inline(__always) func letter(_ k: Int) -> UInt8? {
            guard k < end else { return nil }
            let c = b[k]
            return ignoreCase && c >= 0x41 && c <= 0x5A ? c | 0x20 : c
        }
        switch letter(i + 1) {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"): return i + 2
        case UInt8(ascii: "r"), UInt8(ascii: "v"): return letter(i + 2) == UInt8(ascii: "e") ? i + 3 : nil
        case UInt8(ascii: "l"): return letter(i + 2) == UInt8(ascii: "l") ? i + 3 : nil
        case 0xC5 where ignoreCase && i + 2 < end && b[i + 2] == 0xBF: return i + 3  // U+017F
        default: return nil
        }
    }

    /// `\s+(?!\S)|\s+` at `i` (a whitespace character): the whole run if it ends the text or is one
    /// character; otherwise the run minus its last character (which then starts the next word, so
    /// " word" keeps its space).
    @inline(__always) private static func whitespace(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        var j = i, last = i
        while j < end {
            let (_, n, c) = scalar(b, j, end)
            if c != .whitespace { break }
            last = j
            j += n
        }
        if j == end || last == i { return j }
        return last
    }

    // MARK: - GPT-2

    private static func matchGPT2(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        if b[i] == UInt8(ascii: "'"), let e = contraction(b, i, end, ignoreCase: false) { return e }
        let (_, n0, c0) = scalar(b, i, end)
        // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`
        if b[i] == 0x20 && i + 1 < end {
            let (_, _, c1) = scalar(b, i + 1, end)
            if c1 != .whitespace { return run(b, i + 1, end, c1) }
        }
        if c0 != .whitespace { return run(b, i + n0, end, c0) }
        return whitespace(b, i, end)
    }

    // MARK: - Llama 3 / Qwen2

    @inline(__always) private static func isNewline(_ v: UInt32) -> Bool { v == 0x0A || v == 0x0D }

    private static func matchLlama3(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, maxDigits: Int) -> Int {
        if b[i] == UInt8(ascii: "'"), let e = contraction(b, i, end, ignoreCase: true) { return e }
        let (v0, n0, c0) = scalar(b, i, end)
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if c0 == .letter { return run(b, i + n0, end, .letter) }
        if !isNewline(v0) && c0 != .number && i + n0 < end {
            let (_, n1, c1) = scalar(b, i + n0, end)
            if c1 == .letter { return run(b, i + n0 + n1, end, .letter) }
        }
        // `\p{N}{1,3}` or `\p{N}`
        if c0 == .number {
            var j = i + n0, count = 1
            while count < maxDigits && j < end {
                let (_, n, c) = scalar(b, j, end)
                if c != .number { break }
                j += n
                count += 1
            }
            return j
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        var otherStart: Int? = nil
        if c0 == .other { otherStart = i }
        else if b[i] == 0x20 && i + 1 < end && scalar(b, i + 1, end).2 == .other { otherStart = i + 1 }
        if let s = otherStart {
            var j = run(b, s, end, .other)
            while j < end && (b[j] == 0x0A || b[j] == 0x0D) { j += 1 }
            return j
        }
        // `\s*[\r\n]+`: the whitespace run up to and including its last newline, if it has one.
        var j = i, lastNewline = -1
        while j < end {
            let (v, n, c) = scalar(b, j, end)
            if c != .whitespace { break }
            if isNewline(v) { lastNewline = j }
            j += n
        }
        if lastNewline >= 0 { return lastNewline + 1 }
        // `\s+(?!\S)|\s+`
        return whitespace(b, i, end)
    }
}
