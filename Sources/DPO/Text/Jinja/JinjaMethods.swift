// The Python methods templates call on values: `str` (strip, split, startswith, ...) and `dict`
// (items, keys, values, get). A Python method this file does not implement is an error naming it,
// never an undefined value that would render as "".

extension JinjaArguments {
    /// Binds positional then keyword arguments to `names` (Python's rules: no duplicates, no unknown
    /// keywords, no extra positionals). Missing ones are nil.
    func bind(_ names: [String], _ what: String) throws -> [JinjaValue?] {
        guard positional.count <= names.count else {
            throw JinjaRuntimeError("\(what) takes at most \(names.count) argument(s) (\(positional.count) given)")
        }
        var out = [JinjaValue?](repeating: nil, count: names.count)
        for (i, v) in positional.enumerated() { out[i] = v }
        for (k, v) in keywords {
            guard let i = names.firstIndex(of: k) else { throw JinjaRuntimeError("\(what) got an unexpected keyword argument '\(k)'") }
            guard out[i] == nil else { throw JinjaRuntimeError("\(what) got multiple values for argument '\(k)'") }
            out[i] = v
        }
        return out
    }
}

extension Optional where Wrapped == JinjaValue {
    /// A string argument, or nil when absent or None.
    func string(_ what: String) throws -> String? {
        switch self {
        case .none, .some(.none): return nil
        case .some(.string(let s)): return s
        case .some(let v): throw JinjaRuntimeError("\(what) expects a string, not '\(v.typeName)'")
        }
    }

    /// An int argument (bools count), or nil when absent or None.
    func int(_ what: String) throws -> Int? {
        switch self {
        case .none, .some(.none): return nil
        case .some(let v):
            guard let i = v.intValue else { throw JinjaRuntimeError("\(what) expects an integer, not '\(v.typeName)'") }
            return i
        }
    }
}

enum JinjaMethods {
    private static let pythonStringMethods: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
        "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
        "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans",
        "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
        "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
    ]

    /// A bound method of a string, nil if `name` is not a Python `str` attribute.
    static func stringMethod(_ s: String, _ name: String, _ ev: JinjaEvaluator) throws -> JinjaValue? {
        guard pythonStringMethods.contains(name) else { return nil }
        let what = "str.\(name)()"
        func method(_ body: @escaping (JinjaArguments) throws -> JinjaValue) -> JinjaValue {
            .callable(JinjaCallable(name: what, body))
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            return method { args in
                let chars = try args.bind(["chars"], what)[0].string(what)
                return .string(pythonStrip(s, chars: chars, leading: name != "rstrip", trailing: name != "lstrip"))
            }
        case "upper": return method { _ in .string(s.uppercased()) }
        case "lower": return method { _ in .string(s.lowercased()) }
        case "title": return method { _ in .string(pythonTitle(s)) }
        case "capitalize": return method { _ in .string(pythonCapitalize(s)) }
        case "startswith", "endswith":
            return method { args in
                let a = try args.bind(["prefix"], what)
                let candidates: [JinjaValue]
                switch a[0] {
                case .some(.string(let p)): candidates = [.string(p)]
                case .some(.tuple(let t)): candidates = t
                default: throw JinjaRuntimeError("\(what) expects a string or a tuple of strings")
                }
                for c in candidates {
                    guard case .string(let p) = c else { throw JinjaRuntimeError("\(what) expects a string or a tuple of strings") }
                    let hit = name == "startswith" ? s.unicodeScalars.starts(with: p.unicodeScalars)
                        : s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed())
                    if hit { return .bool(true) }
                }
                return .bool(false)
            }
        case "split", "rsplit":
            return method { args in
                let a = try args.bind(["sep", "maxsplit"], what)
                let parts = try pythonSplit(s, separator: try a[0].string(what), maxSplit: try a[1].int(what) ?? -1, fromRight: name == "rsplit")
                try ev.countIterations(parts.count)
                return .list(parts.map { .string($0) })
            }
        case "splitlines":
            return method { args in
                let keep = (try args.bind(["keepends"], what)[0])?.isTruthy ?? false
                let lines = pythonSplitLines(s, keepEnds: keep)
                try ev.countIterations(lines.count)
                return .list(lines.map { .string($0) })
            }
        case "replace":
            return method { args in
                let a = try args.bind(["old", "new", "count"], what)
                guard let old = try a[0].string(what), let new = try a[1].string(what) else { throw JinjaRuntimeError("\(what) needs two strings") }
                return .string(try pythonReplace(s, old, new, count: try a[2].int(what) ?? -1, ev))
            }
        case "find", "rfind", "index", "rindex", "count":
            return method { args in
                guard let sub = try args.bind(["sub"], what)[0].string(what) else { throw JinjaRuntimeError("\(what) needs a string") }
                let hay = Array(s.unicodeScalars), needle = Array(sub.unicodeScalars)
                var hits: [Int] = []
                if needle.isEmpty {
                    hits = Array(0...hay.count)
                } else if needle.count <= hay.count {
                    var i = 0
                    while i + needle.count <= hay.count {
                        if hay[i..<(i + needle.count)].elementsEqual(needle) {
                            hits.append(i)
                            if name == "count" { i += needle.count; continue }
                        }
                        i += 1
                    }
                }
                switch name {
                case "count": return .int(hits.count)
                case "find": return .int(hits.first ?? -1)
                case "rfind": return .int(hits.last ?? -1)
                default:
                    guard let i = name == "index" ? hits.first : hits.last else { throw JinjaRuntimeError("substring not found") }
                    return .int(i)
                }
            }
        case "join":
            return method { args in
                guard let items = try args.bind(["iterable"], what)[0] else { throw JinjaRuntimeError("\(what) needs an iterable") }
                var out = ""
                for (i, item) in try ev.iterate(items).enumerated() {
                    guard case .string(let t) = item else {
                        throw JinjaRuntimeError("sequence item \(i): expected str instance, \(item.typeName) found")
                    }
                    if i > 0 { out += s }
                    out += t
                    try ev.checkLength(out.utf8.count, "the joined string")
                }
                return .string(out)
            }
        case "isdigit", "isdecimal", "isnumeric", "isalpha", "isalnum", "isspace", "isupper", "islower":
            return method { _ in .bool(pythonCharacterTest(s, name)) }
        case "removeprefix", "removesuffix":
            return method { args in
                guard let affix = try args.bind(["affix"], what)[0].string(what) else { throw JinjaRuntimeError("\(what) needs a string") }
                let scalars = Array(s.unicodeScalars), a = Array(affix.unicodeScalars)
                var out = ""
                if name == "removeprefix", scalars.starts(with: a) {
                    out.unicodeScalars.append(contentsOf: scalars[a.count...])
                } else if name == "removesuffix", !a.isEmpty, scalars.reversed().starts(with: a.reversed()) {
                    out.unicodeScalars.append(contentsOf: scalars[..<(scalars.count - a.count)])
                } else {
                    return .string(s)
                }
                return .string(out)
            }
        default:
            throw JinjaRuntimeError("unsupported string method '\(name)'")
        }
    }

    /// A bound method of a dict, nil if `name` is not a Python `dict` attribute.
    static func dictMethod(_ d: JinjaDict, _ name: String, _ ev: JinjaEvaluator) throws -> JinjaValue? {
        let what = "dict.\(name)()"
        switch name {
        case "items":
            return .callable(JinjaCallable(name: what) { args in
                _ = try args.bind([], what)
                return .list(d.pairs.map { .tuple([.string($0.0), $0.1]) })
            })
        case "keys":
            return .callable(JinjaCallable(name: what) { args in
                _ = try args.bind([], what)
                return .list(d.keys.map { .string($0) })
            })
        case "values":
            return .callable(JinjaCallable(name: what) { args in
                _ = try args.bind([], what)
                return .list(d.values)
            })
        case "get":
            return .callable(JinjaCallable(name: what) { args in
                let a = try args.bind(["key", "default"], what)
                guard case .some(.string(let k)) = a[0] else { return a[1] ?? .none }
                return d[k] ?? a[1] ?? .none
            })
        case "copy", "pop", "popitem", "update", "setdefault", "clear", "fromkeys":
            throw JinjaRuntimeError("unsupported dict method '\(name)'")
        default:
            return nil
        }
    }

    /// Python list methods are not available (jinja2's immutable sandbox refuses the mutating ones).
    static func refuseListMethod(_ name: String) throws {
        if ["append", "extend", "insert", "remove", "pop", "clear", "index", "count", "sort", "reverse", "copy"].contains(name) {
            throw JinjaRuntimeError("unsupported list method '\(name)'")
        }
    }
}

// MARK: - Python string algorithms

/// `str.strip(chars)`: without `chars`, Python whitespace.
func pythonStrip(_ s: String, chars: String?, leading: Bool, trailing: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    func strip(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isPythonSpace(c) }
    let scalars = Array(s.unicodeScalars)
    var lo = 0, hi = scalars.count
    if leading { while lo < hi && strip(scalars[lo]) { lo += 1 } }
    if trailing { while hi > lo && strip(scalars[hi - 1]) { hi -= 1 } }
    var out = ""
    out.unicodeScalars.append(contentsOf: scalars[lo..<hi])
    return out
}

/// `str.split(sep, maxsplit)` / `str.rsplit`: without `sep`, runs of whitespace separate and
/// leading/trailing whitespace is ignored.
func pythonSplit(_ s: String, separator: String?, maxSplit: Int, fromRight: Bool) throws -> [String] {
    var scalars = Array(s.unicodeScalars)
    if fromRight { scalars.reverse() }
    var parts: [[Unicode.Scalar]] = []
    var splits = 0
    let limit = maxSplit < 0 ? Int.max : maxSplit
    if let separator {
        var sep = Array(separator.unicodeScalars)
        guard !sep.isEmpty else { throw JinjaRuntimeError("empty separator") }
        if fromRight { sep.reverse() }
        var start = 0, i = 0
        while i + sep.count <= scalars.count && splits < limit {
            if scalars[i..<(i + sep.count)].elementsEqual(sep) {
                parts.append(Array(scalars[start..<i]))
                i += sep.count
                start = i
                splits += 1
            } else {
                i += 1
            }
        }
        parts.append(Array(scalars[start...]))
    } else {
        var i = 0
        while i < scalars.count {
            while i < scalars.count && isPythonSpace(scalars[i]) { i += 1 }
            if i == scalars.count { break }
            if splits == limit {
                var end = scalars.count
                while end > i && isPythonSpace(scalars[end - 1]) { end -= 1 }
                parts.append(Array(scalars[i..<end]))
                break
            }
            let start = i
            while i < scalars.count && !isPythonSpace(scalars[i]) { i += 1 }
            parts.append(Array(scalars[start..<i]))
            splits += 1
        }
    }
    if fromRight { parts = parts.reversed().map { $0.reversed() } }
    return parts.map { p in var o = ""; o.unicodeScalars.append(contentsOf: p); return o }
}

/// `str.splitlines(keepends)`.
func pythonSplitLines(_ s: String, keepEnds: Bool) -> [String] {
    let scalars = Array(s.unicodeScalars)
    var out: [String] = []
    var start = 0, i = 0
    while i < scalars.count {
        let c = scalars[i]
        let isBreak: Bool
        switch c.value {
        case 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029: isBreak = true
        default: isBreak = false
        }
        if !isBreak { i += 1; continue }
        var end = i + 1
        if c == "\r" && end < scalars.count && scalars[end] == "\n" { end += 1 }
        var line = ""
        line.unicodeScalars.append(contentsOf: scalars[start..<(keepEnds ? end : i)])
        out.append(line)
        start = end
        i = end
    }
    if start < scalars.count {
        var line = ""
        line.unicodeScalars.append(contentsOf: scalars[start...])
        out.append(line)
    }
    return out
}

/// `str.replace(old, new, count)`; an empty `old` inserts `new` between characters, as in Python.
func pythonReplace(_ s: String, _ old: String, _ new: String, count: Int, _ ev: JinjaEvaluator) throws -> String {
    let scalars = Array(s.unicodeScalars), o = Array(old.unicodeScalars)
    let limit = count < 0 ? Int.max : count
    var out = ""
    var done = 0
    var i = 0
    if o.isEmpty {
        for c in scalars {
            if done < limit { out += new; done += 1 }
            out.unicodeScalars.append(c)
            try ev.checkLength(out.utf8.count, "the replaced string")
        }
        if done < limit { out += new }
        return out
    }
    while i < scalars.count {
        if done < limit && i + o.count <= scalars.count && scalars[i..<(i + o.count)].elementsEqual(o) {
            out += new
            done += 1
            i += o.count
            try ev.checkLength(out.utf8.count, "the replaced string")
        } else {
            out.unicodeScalars.append(scalars[i])
            i += 1
        }
    }
    return out
}

/// Python's `str.title()`: a cased letter after an uncased character starts a word (title case),
/// later cased letters are lower case.
func pythonTitle(_ s: String) -> String {
    var out = ""
    var previousCased = false
    for c in s.unicodeScalars {
        out += previousCased ? c.properties.lowercaseMapping : c.properties.titlecaseMapping
        previousCased = c.properties.isCased
    }
    return out
}

/// Python's `str.capitalize()`: the first character in title case, the rest lower case.
func pythonCapitalize(_ s: String) -> String {
    var out = ""
    for (i, c) in s.unicodeScalars.enumerated() {
        out += i == 0 ? c.properties.titlecaseMapping : c.properties.lowercaseMapping
    }
    return out
}

/// `isdigit`, `isalpha`, ... of a whole string (false for the empty string, as in Python).
private func pythonCharacterTest(_ s: String, _ name: String) -> Bool {
    let scalars = Array(s.unicodeScalars)
    func isAlpha(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    func isDigit(_ c: Unicode.Scalar) -> Bool {
        c.properties.numericType == .decimal || c.properties.numericType == .digit
    }
    switch name {
    case "isupper", "islower":
        let cased = scalars.filter { $0.properties.isCased }
        guard !cased.isEmpty else { return false }
        return cased.allSatisfy { name == "isupper" ? !$0.properties.changesWhenUppercased : !$0.properties.changesWhenLowercased }
    default:
        guard !scalars.isEmpty else { return false }
        return scalars.allSatisfy { c in
            switch name {
            case "isdecimal": return c.properties.numericType == .decimal
            case "isdigit": return isDigit(c)
            case "isnumeric": return c.properties.numericType != nil
            case "isalpha": return isAlpha(c)
            case "isalnum": return isAlpha(c) || c.properties.numericType != nil
            default: return isPythonSpace(c)
            }
        }
    }
}
