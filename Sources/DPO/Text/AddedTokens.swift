/// A token added on top of the model's vocabulary (HF `AddedToken`): matched whole in the text
/// before pre-tokenization and never split.
public struct AddedToken: Equatable, Sendable {
    public var id: Int32
    public var content: String
    /// Match only between word boundaries (`\w`).
    public var singleWord = false
    /// Take the whitespace on the left / right into the match.
    public var lstrip = false
    public var rstrip = false
    /// Matched in normalized text (true) or in the raw text (false).
    public var normalized = true
    /// Special tokens are skipped by `decode(skipSpecialTokens: true)`.
    public var special = false

    public init(id: Int32, content: String, special: Bool, normalized: Bool) {
        self.id = id
        self.content = content
        self.special = special
        self.normalized = normalized
    }
}

/// One stretch of text between added tokens, or an added token.
enum TextSegment {
    case text(Range<Int>)
    case token(Int32)
}

/// Finds added tokens in text as HF's `AddedVocabulary::find_matches` does: leftmost-longest
/// matches (its Aho-Corasick automaton), then single_word / lstrip / rstrip applied to each.
struct AddedTokenMatcher {
    /// A byte trie of the patterns: node -> (byte -> child), and the token index ending there.
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Int32] = [-1]
    private var firstBytes = [Bool](repeating: false, count: 256)
    private let tokens: [AddedToken]

    var isEmpty: Bool { tokens.isEmpty }

    /// `patterns[k]` is what is searched for `tokens[k]` (its content, normalized if it is a
    /// normalized token).
    init(tokens: [AddedToken], patterns: [[UInt8]]) {
        self.tokens = tokens
        for (k, pattern) in patterns.enumerated() where !pattern.isEmpty {
            var node = 0
            for byte in pattern {
                if let child = children[node][byte] { node = Int(child); continue }
                children.append([:]); terminal.append(-1)
                children[node][byte] = Int32(children.count - 1)
                node = children.count - 1
            }
            terminal[node] = Int32(k)
            firstBytes[Int(pattern[0])] = true
        }
    }

    /// The longest pattern starting at `i`: (token index, end).
    private func longest(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (Int, Int)? {
        var node = 0, best: (Int, Int)? = nil
        var j = i
        while j < end, let child = children[node][b[j]] {
            node = Int(child)
            j += 1
            if terminal[node] >= 0 { best = (Int(terminal[node]), j) }
        }
        return best
    }

    /// Cuts `b[range]` into text and added tokens.
    func split(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [TextSegment]) {
        if tokens.isEmpty { out.append(.text(range)); return }
        var startOffset = range.lowerBound
        var i = range.lowerBound
        while i < range.upperBound {
            guard firstBytes[Int(b[i])], let (k, matchEnd) = longest(b, i, range.upperBound) else { i += 1; continue }
            let token = tokens[k]
            var start = i, stop = matchEnd
            i = matchEnd
            if token.singleWord {
                let before = start == range.lowerBound || !endsWithWord(b, range.lowerBound, start)
                let after = stop == range.upperBound || !UnicodeClasses.isWord(decodeScalar(b, stop, range.upperBound).value)
                if !before || !after { continue }
            }
            if token.lstrip {
                var s = start
                while s > startOffset, let (v, n) = lastScalar(b, startOffset, s), UnicodeClasses.isSpace(v) { s -= n }
                start = s
            }
            if token.rstrip {
                while stop < range.upperBound {
                    let (v, n) = decodeScalar(b, stop, range.upperBound)
                    if !UnicodeClasses.isSpace(v) { break }
                    stop += n
                }
                i = stop
            }
            if startOffset < start { out.append(.text(startOffset..<start)) }
            out.append(.token(token.id))
            startOffset = stop
        }
        if startOffset < range.upperBound { out.append(.text(startOffset..<range.upperBound)) }
    }

    private func endsWithWord(_ b: UnsafeBufferPointer<UInt8>, _ lower: Int, _ end: Int) -> Bool {
        guard let (v, _) = lastScalar(b, lower, end) else { return false }
        return UnicodeClasses.isWord(v)
    }
}

/// The scalar that ends at `end` (not before `lower`), and its length.
private func lastScalar(_ b: UnsafeBufferPointer<UInt8>, _ lower: Int, _ end: Int) -> (UInt32, Int)? {
    guard end > lower else { return nil }
    var s = end - 1
    while s > lower && b[s] & 0xC0 == 0x80 && end - s < 4 { s -= 1 }
    let (v, n) = decodeScalar(b, s, end)
    return s + n == end ? (v, n) : (0xFFFD, 1)
}
