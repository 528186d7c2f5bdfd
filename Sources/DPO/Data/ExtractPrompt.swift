/// TRL's `extract_prompt` (trl/data_utils.py) for rows with only `chosen` and `rejected`: the
/// prompt is their shared start; what follows is each completion.
///
/// It runs over the items of both (characters of strings, messages of conversations):
///
///     for idx in range(min(len(chosen), len(rejected))):
///         if chosen[idx] != rejected[idx]:
///             if chosen[idx - 1] == " ":  # remove space before the prompt
///                 idx -= 1
///             break
///     prompt, chosen, rejected = chosen[:idx], chosen[idx:], rejected[idx:]
///
/// Reproduced as Python runs it: when nothing differs, `idx` stays at the last index (the last
/// shared item goes to the completions); when the first items differ, `chosen[-1]` is the last
/// character, and if it is a space `idx` becomes -1, which slices from the end. Strings are
/// sequences of Unicode scalars (Python's code points). An empty `chosen` or `rejected` fails in
/// Python (`idx` is never set): here it is an error.
enum ExtractPrompt {
    static func split<T: Equatable>(_ chosen: [T], _ rejected: [T], space: T?) -> (prompt: [T], chosen: [T], rejected: [T])? {
        let n = min(chosen.count, rejected.count)
        guard n > 0 else { return nil }
        var idx = n - 1
        for i in 0..<n where chosen[i] != rejected[i] {
            idx = i
            let previous = i > 0 ? chosen[i - 1] : chosen[chosen.count - 1]
            if let space, previous == space { idx -= 1 }
            break
        }
        return (head(chosen, idx), tail(chosen, idx), tail(rejected, idx))
    }

    /// Python's `a[:idx]` for idx >= -1.
    private static func head<T>(_ a: [T], _ idx: Int) -> [T] {
        Array(a.prefix(idx >= 0 ? idx : max(a.count + idx, 0)))
    }

    /// Python's `a[idx:]` for idx >= -1.
    private static func tail<T>(_ a: [T], _ idx: Int) -> [T] {
        Array(a.suffix(from: min(idx >= 0 ? idx : max(a.count + idx, 0), a.count)))
    }

    /// Strings, split by Unicode scalars.
    static func strings(_ chosen: String, _ rejected: String) -> (prompt: String, chosen: String, rejected: String)? {
        guard let s = split(Array(chosen.unicodeScalars), Array(rejected.unicodeScalars), space: " ") else { return nil }
        func text(_ scalars: [Unicode.Scalar]) -> String {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars)
            return String(view)
        }
        return (text(s.prompt), text(s.chosen), text(s.rejected))
    }

    /// Conversations, messages compared as Python dicts of a `datasets.Dataset` (where a key some
    /// message lacks reads as None, so null-valued keys do not count).
    static func conversations(_ chosen: [JSONValue], _ rejected: [JSONValue]) -> (prompt: [JSONValue], chosen: [JSONValue], rejected: [JSONValue])? {
        func comparable(_ m: JSONValue) -> JSONValue {
            guard var o = m.object else { return m }
            for k in o.keys where o[k]?.isNull == true { o[k] = nil }
            return .object(o)
        }
        guard let s = split(chosen.map(comparable), rejected.map(comparable), space: nil) else { return nil }
        // Hand back the original messages (same positions).
        let p = s.prompt.count, c = chosen.count - s.chosen.count, r = rejected.count - s.rejected.count
        return (Array(chosen.prefix(p)), Array(chosen[c...]), Array(rejected[r...]))
    }
}
