// The filters (`x|name(args)`) of jinja2 that chat templates use, with jinja2 3.1's semantics
// (jinja2/filters.py), and transformers' own `tojson` (json.dumps with ensure_ascii=False, indent,
// separators and sort_keys). Names not listed here are refused when the template is parsed.

#if canImport(Glibc)
import Glibc
#endif

/// The built-in filters and tests.
enum JinjaBuiltins: JinjaNameRegistry {
    static let filterNames: Set<String> = [
        "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "indent", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round",
        "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount",
    ]

    static func hasFilter(_ name: String) -> Bool { filterNames.contains(name) }
    static func hasTest(_ name: String) -> Bool { testNames.contains(name) }

    static func filter(_ name: String, _ value: JinjaValue, _ args: JinjaArguments, _ ev: JinjaEvaluator) throws -> JinjaValue {
        let what = "filter '\(name)'"
        switch name {
        case "abs":
            _ = try args.bind([], what)
            switch value {
            case .int(let i):
                guard i != Int.min else { throw JinjaRuntimeError("integer overflow in abs") }
                return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .float(let d): return .float(abs(d))
            default: throw JinjaRuntimeError("bad operand type for abs(): '\(value.typeName)'")
            }
        case "capitalize":
            _ = try args.bind([], what)
            return .string(pythonCapitalize(try value.pythonStr()))
        case "d", "default":
            let a = try args.bind(["default_value", "boolean"], what)
            let boolean = a[1]?.isTruthy ?? false
            if value.isUndefined || (boolean && !value.isTruthy) { return a[0] ?? .string("") }
            return value
        case "dictsort":
            let a = try args.bind(["case_sensitive", "by", "reverse"], what)
            guard case .dict(let d) = value else { throw JinjaRuntimeError("dictsort: you can only sort by either key or value (of a dict)") }
            let byValue: Bool
            switch try a[1].string(what) ?? "key" {
            case "key": byValue = false
            case "value": byValue = true
            default: throw JinjaRuntimeError("dictsort: you can only sort by either \"key\" or \"value\"")
            }
            let caseSensitive = a[0]?.isTruthy ?? false
            let pairs = d.pairs.map { JinjaValue.tuple([.string($0.0), $0.1]) }
            return .list(try stableSort(pairs, reverse: a[2]?.isTruthy ?? false) { item in
                let part = item.sequenceElements?[byValue ? 1 : 0] ?? .none
                return caseSensitive ? part : ignoreCase(part)
            })
        case "first", "last":
            _ = try args.bind([], what)
            let items = try ev.iterate(value)
            return (name == "first" ? items.first : items.last) ?? .undefined("No \(name) item, sequence was empty.")
        case "float":
            let a = try args.bind(["default"], what)
            return pythonFloat(value) ?? a[0] ?? .float(0)
        case "int":
            let a = try args.bind(["default", "base"], what)
            return try pythonInt(value, base: try a[1].int(what) ?? 10) ?? a[0] ?? .int(0)
        case "indent":
            let a = try args.bind(["width", "first", "blank"], what)
            let indentation: String
            switch a[0] {
            case .some(.string(let s)): indentation = s
            case .none: indentation = "    "
            case .some(let v):
                guard let n = v.intValue else { throw JinjaRuntimeError("\(what) expects an integer or string width") }
                try ev.checkLength(n, "the indentation")
                indentation = String(repeating: " ", count: max(0, n))
            }
            let text = try value.pythonStr() + "\n"
            var lines = pythonSplitLines(text, keepEnds: false)
            var out: String
            if a[2]?.isTruthy ?? false {
                out = lines.joined(separator: "\n" + indentation)
            } else {
                out = lines.isEmpty ? "" : lines.removeFirst()
                if !lines.isEmpty { out += "\n" + lines.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n") }
            }
            if a[1]?.isTruthy ?? false { out = indentation + out }
            try ev.checkLength(out.utf8.count, "the indented string")
            return .string(out)
        case "items":
            _ = try args.bind([], what)
            switch value {
            case .undefined: return .list([])
            case .dict(let d): return .list(d.pairs.map { .tuple([.string($0.0), $0.1]) })
            default: throw JinjaRuntimeError("filter 'items': can only get item pairs from a mapping")
            }
        case "join":
            let a = try args.bind(["d", "attribute"], what)
            var items = try ev.iterate(value)
            if let attribute = a[1] { items = try items.map { try attributeGetter(attribute, default: nil, ev)($0) } }
            let separator = try (a[0] ?? .string("")).pythonStr()
            var out = ""
            for (i, item) in items.enumerated() {
                if i > 0 { out += separator }
                out += try item.pythonStr()
                try ev.checkLength(out.utf8.count, "the joined string")
            }
            return .string(out)
        case "count", "length":
            _ = try args.bind([], what)
            switch value {
            case .undefined: return .int(0)
            case .string(let s): return .int(s.unicodeScalars.count)
            case .list(let a), .tuple(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            default: throw JinjaRuntimeError("object of type '\(value.typeName)' has no len()")
            }
        case "list":
            _ = try args.bind([], what)
            return .list(try ev.iterate(value))
        case "lower":
            _ = try args.bind([], what)
            return .string(try value.pythonStr().lowercased())
        case "upper":
            _ = try args.bind([], what)
            return .string(try value.pythonStr().uppercased())
        case "title":
            _ = try args.bind([], what)
            return .string(jinjaTitle(try value.pythonStr()))
        case "map":
            guard value.isTruthy else { return .list([]) }
            let items = try ev.iterate(value)
            try ev.countIterations(items.count)
            if args.positional.isEmpty, let attribute = args.keywords.first(where: { $0.0 == "attribute" })?.1 {
                let rest = args.keywords.filter { $0.0 != "attribute" }
                let defaultValue = rest.first(where: { $0.0 == "default" })?.1
                if rest.contains(where: { $0.0 != "default" }) { throw JinjaRuntimeError("filter 'map': unexpected keyword argument") }
                let getter = try attributeGetter(attribute, default: defaultValue, ev)
                return .list(try items.map(getter))
            }
            guard case .some(.string(let filterName)) = args.positional.first else {
                throw JinjaRuntimeError("filter 'map' requires a filter name or attribute=")
            }
            guard hasFilter(filterName) else { throw JinjaRuntimeError("unknown filter '\(filterName)' (in map)") }
            let rest = JinjaArguments(Array(args.positional.dropFirst()), keywords: args.keywords)
            return .list(try items.map { try filter(filterName, $0, rest, ev) })
        case "max", "min":
            let a = try args.bind(["case_sensitive", "attribute"], what)
            let items = try ev.iterate(value)
            guard !items.isEmpty else { return .undefined("No aggregated item, sequence was empty.") }
            let caseSensitive = a[0]?.isTruthy ?? false
            let key = try a[1].map { try attributeGetter($0, default: nil, ev) }
            var best = items[0]
            func k(_ v: JinjaValue) throws -> JinjaValue {
                let x = try key?(v) ?? v
                return caseSensitive ? x : ignoreCase(x)
            }
            for item in items.dropFirst() {
                let better = name == "min" ? try jinjaLess(try k(item), try k(best)) : try jinjaLess(try k(best), try k(item))
                if better { best = item }
            }
            return best
        case "select", "reject", "selectattr", "rejectattr":
            guard value.isTruthy else { return .list([]) }
            let items = try ev.iterate(value)
            try ev.countIterations(items.count)
            let byAttribute = name.hasSuffix("attr")
            var positional = args.positional
            var transform: (JinjaValue) throws -> JinjaValue = { $0 }
            if byAttribute {
                guard !positional.isEmpty else { throw JinjaRuntimeError("filter '\(name)': missing parameter for attribute name") }
                transform = try attributeGetter(positional.removeFirst(), default: nil, ev)
            }
            var predicate: (JinjaValue) throws -> Bool = { $0.isTruthy }
            if !positional.isEmpty {
                guard case .string(let testName) = positional.removeFirst() else { throw JinjaRuntimeError("filter '\(name)': the test name must be a string") }
                guard hasTest(testName) else { throw JinjaRuntimeError("No test named '\(testName)' (in \(name))") }
                let rest = JinjaArguments(positional, keywords: args.keywords)
                predicate = { try test(testName, $0, rest, ev) }
            }
            let keep = name.hasPrefix("select")
            return .list(try items.filter { try predicate(try transform($0)) == keep })
        case "replace":
            let a = try args.bind(["old", "new", "count"], what)
            guard let old = a[0], let new = a[1] else { throw JinjaRuntimeError("filter 'replace' needs old and new") }
            return .string(try pythonReplace(try value.pythonStr(), try old.pythonStr(), try new.pythonStr(), count: try a[2].int(what) ?? -1, ev))
        case "reverse":
            _ = try args.bind([], what)
            if case .string(let s) = value { var o = ""; o.unicodeScalars.append(contentsOf: s.unicodeScalars.reversed()); return .string(o) }
            return .list(try ev.iterate(value).reversed())
        case "round":
            let a = try args.bind(["precision", "method"], what)
            return try pythonRound(value, precision: try a[0].int(what) ?? 0, method: try a[1].string(what) ?? "common")
        case "safe":
            _ = try args.bind([], what)
            return value
        case "sort":
            let a = try args.bind(["reverse", "case_sensitive", "attribute"], what)
            let caseSensitive = a[1]?.isTruthy ?? false
            let key = try a[2].map { try attributeGetter($0, default: nil, ev) }
            let items = try ev.iterate(value)
            try ev.countIterations(items.count)
            return .list(try stableSort(items, reverse: a[0]?.isTruthy ?? false) { v in
                let x = try key?(v) ?? v
                return caseSensitive ? x : ignoreCase(x)
            })
        case "string":
            _ = try args.bind([], what)
            return .string(try value.pythonStr())
        case "sum":
            let a = try args.bind(["attribute", "start"], what)
            var items = try ev.iterate(value)
            if let attribute = a[0] { items = try items.map { try attributeGetter(attribute, default: nil, ev)($0) } }
            var total = a[1] ?? .int(0)
            for item in items { total = try JinjaOperators.binary("+", total, item, ev) }
            return total
        case "tojson":
            let a = try args.bind(["ensure_ascii", "indent", "separators", "sort_keys"], what)
            var options = JSONDumpOptions()
            options.ensureASCII = a[0]?.isTruthy ?? false
            options.sortKeys = a[3]?.isTruthy ?? false
            switch a[1] {
            case .none, .some(.none): break
            case .some(.string(let s)): options.indent = s
            case .some(let v):
                guard let n = v.intValue else { throw JinjaRuntimeError("tojson: indent must be an integer or a string") }
                try ev.checkLength(n, "the JSON indentation")
                options.indent = String(repeating: " ", count: max(0, n))
            }
            switch a[2] {
            case .none, .some(.none): break
            case .some(let v):
                guard let pair = v.sequenceElements, pair.count == 2, case .string(let item) = pair[0], case .string(let key) = pair[1] else {
                    throw JinjaRuntimeError("tojson: separators must be a pair of strings")
                }
                options.itemSeparator = item
                options.keySeparator = key
            }
            let text = try pythonJSONDumps(value, options)
            try ev.checkLength(text.utf8.count, "the JSON text")
            return .string(text)
        case "trim":
            let a = try args.bind(["chars"], what)
            return .string(pythonStrip(try value.pythonStr(), chars: try a[0].string(what), leading: true, trailing: true))
        case "unique":
            let a = try args.bind(["case_sensitive", "attribute"], what)
            let caseSensitive = a[0]?.isTruthy ?? false
            let key = try a[1].map { try attributeGetter($0, default: nil, ev) }
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            let items = try ev.iterate(value)
            try ev.countIterations(items.count * max(1, items.count / 64))
            for item in items {
                let x = try key?(item) ?? item
                let k = caseSensitive ? x : ignoreCase(x)
                if try seen.contains(where: { try jinjaEquals($0, k) }) { continue }
                seen.append(k)
                out.append(item)
            }
            return .list(out)
        case "wordcount":
            _ = try args.bind([], what)
            var count = 0, inWord = false
            for c in try value.pythonStr().unicodeScalars {
                let isWord = c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
                if isWord && !inWord { count += 1 }
                inWord = isWord
            }
            return .int(count)
        default:
            throw JinjaRuntimeError("unknown filter '\(name)'")
        }
    }

    /// jinja2's `make_attrgetter`: a dotted path ("function.name", "tool_calls.0") looked up item by
    /// item with `getitem`; an undefined result becomes `default` when one is given.
    static func attributeGetter(_ attribute: JinjaValue, default defaultValue: JinjaValue?, _ ev: JinjaEvaluator) throws
        -> (JinjaValue) throws -> JinjaValue {
        let parts: [JinjaValue]
        switch attribute {
        case .string(let s):
            parts = s.split(separator: ".", omittingEmptySubsequences: false).map { part in
                if !part.isEmpty, part.allSatisfy({ $0.isASCII && $0.isNumber }), let i = Int(part) { return .int(i) }
                return .string(String(part))
            }
        case .int: parts = [attribute]
        default: throw JinjaRuntimeError("attribute names must be strings or integers")
        }
        return { item in
            var v = item
            for part in parts {
                v = try ev.getItem(v, part)
                if let defaultValue, v.isUndefined { v = defaultValue }
            }
            return v
        }
    }

    /// jinja2's `ignore_case`: strings compare lower-cased.
    private static func ignoreCase(_ v: JinjaValue) -> JinjaValue {
        if case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    /// Python's `sorted(items, key=key, reverse=reverse)`: stable, equal keys keep their order (also reversed).
    private static func stableSort(_ items: [JinjaValue], reverse: Bool, key: (JinjaValue) throws -> JinjaValue) throws -> [JinjaValue] {
        let keyed = try items.map { (try key($0), $0) }
        func merge(_ a: ArraySlice<(JinjaValue, JinjaValue)>) throws -> [(JinjaValue, JinjaValue)] {
            if a.count <= 1 { return Array(a) }
            let mid = a.startIndex + a.count / 2
            let left = try merge(a[a.startIndex..<mid]), right = try merge(a[mid...])
            var out: [(JinjaValue, JinjaValue)] = []
            out.reserveCapacity(a.count)
            var i = 0, j = 0
            while i < left.count && j < right.count {
                // Take from the right only when strictly before (ascending) / after (reverse).
                let takeRight = reverse ? try jinjaLess(left[i].0, right[j].0) : try jinjaLess(right[j].0, left[i].0)
                if takeRight { out.append(right[j]); j += 1 } else { out.append(left[i]); i += 1 }
            }
            out += left[i...]
            out += right[j...]
            return out
        }
        return try merge(keyed[...]).map { $0.1 }
    }

    /// jinja2's `title` filter (not `str.title`): words start after `-`, whitespace, `(`, `{`, `[`, `<`.
    private static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atWordStart = true
        var word = ""
        func flush() {
            guard !word.isEmpty else { return }
            var first = true
            for c in word.unicodeScalars {
                out += first ? c.properties.uppercaseMapping : c.properties.lowercaseMapping
                first = false
            }
            word = ""
        }
        for c in s.unicodeScalars {
            let isSeparator = c == "-" || c == "(" || c == "{" || c == "[" || c == "<" || isPythonSpace(c)
            if isSeparator {
                flush()
                out.unicodeScalars.append(c)
                atWordStart = true
            } else {
                word.unicodeScalars.append(c)
                atWordStart = false
            }
        }
        _ = atWordStart
        flush()
        return out
    }

    /// Python's `float(value)`, nil where Python raises.
    private static func pythonFloat(_ v: JinjaValue) -> JinjaValue? {
        switch v {
        case .float: return v
        case .int(let i): return .float(Double(i))
        case .bool(let b): return .float(b ? 1 : 0)
        case .string(let s):
            let t = pythonStrip(s, chars: nil, leading: true, trailing: true)
            guard isPythonFloatLiteral(t) else { return nil }
            return Double(t.replacingUnderscores()).map { .float($0) }
        default: return nil
        }
    }

    /// What Python's `float(str)` accepts: decimal digits with single underscores between them, an
    /// optional fraction and exponent, or inf/infinity/nan, with an optional sign.
    private static func isPythonFloatLiteral(_ t: String) -> Bool {
        var s = Substring(t)
        if s.first == "+" || s.first == "-" { s = s.dropFirst() }
        if ["inf", "infinity", "nan"].contains(s.lowercased()) { return true }
        func digits(_ x: Substring) -> Bool {
            !x.isEmpty && x.first != "_" && x.last != "_" && !x.contains("__") && x.allSatisfy { ($0.isASCII && $0.isNumber) || $0 == "_" }
        }
        var mantissa = s, exponent: Substring? = nil
        if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = s[..<e]
            var x = s[s.index(after: e)...]
            if x.first == "+" || x.first == "-" { x = x.dropFirst() }
            exponent = x
        }
        if let exponent, !digits(exponent) { return false }
        let halves = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        if halves.count == 1 { return digits(halves[0]) }
        let (a, b) = (halves[0], halves[1])
        return (a.isEmpty || digits(a)) && (b.isEmpty || digits(b)) && !(a.isEmpty && b.isEmpty)
    }

    /// jinja2's `int` filter: `int(value, base)` for strings, `int(value)` otherwise, then
    /// `int(float(value))`; nil where all of these fail.
    private static func pythonInt(_ v: JinjaValue, base: Int) throws -> JinjaValue? {
        switch v {
        case .int: return v
        case .bool(let b): return .int(b ? 1 : 0)
        case .float(let d):
            guard d.isFinite, d > -0x1p63, d < 0x1p63 else { return nil }
            return .int(Int(d.rounded(.towardZero)))
        case .string(let s):
            if let i = parsePythonInt(pythonStrip(s, chars: nil, leading: true, trailing: true), base: base) { return .int(i) }
            if let f = pythonFloat(v) { return try pythonInt(f, base: 10) }
            return nil
        default:
            return nil
        }
    }

    /// Python's `int(str, base)` (base 0: the prefix decides; 2/8/16 accept their prefix).
    private static func parsePythonInt(_ t: String, base: Int) -> Int? {
        var s = Substring(t)
        var negative = false
        if s.first == "+" || s.first == "-" { negative = s.first == "-"; s = s.dropFirst() }
        var radix = base
        let lower = s.lowercased()
        for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] where lower.hasPrefix(prefix) && (base == 0 || base == r) {
            radix = r
            s = s.dropFirst(2)
            if s.first == "_" { s = s.dropFirst() }
        }
        if radix == 0 { radix = 10 }
        guard (2...36).contains(radix), !s.isEmpty, s.first != "_", s.last != "_", !s.contains("__") else { return nil }
        guard let magnitude = Int(String(s.filter { $0 != "_" }), radix: radix) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// jinja2's `round` filter: Python's `round(value, precision)` (correctly rounded, ties to even),
    /// or math.ceil / math.floor of value × 10^precision.
    private static func pythonRound(_ v: JinjaValue, precision: Int, method: String) throws -> JinjaValue {
        guard ["common", "ceil", "floor"].contains(method) else {
            throw JinjaRuntimeError("filter 'round': method must be common, ceil or floor")
        }
        guard let number = v.numeric else { throw JinjaRuntimeError("filter 'round' needs a number, not '\(v.typeName)'") }
        if method == "common" {
            if case .int(let i) = number {
                guard precision >= 0 else { throw JinjaRuntimeError("filter 'round': unsupported negative precision for an integer") }
                return .int(i)
            }
            let d = number.double
            guard d.isFinite, precision <= 300, precision >= -300 else { return .float(d) }
            if precision < 0 {
                throw JinjaRuntimeError("filter 'round': unsupported negative precision")
            }
            // glibc's printf rounds the exact binary value to `precision` decimals, ties to even: Python's round.
            var buffer = [CChar](repeating: 0, count: 400)
            let written = withVaList([Int32(precision), d]) { vsnprintf(&buffer, buffer.count, "%.*f", $0) }
            guard written > 0, written < buffer.count else { return .float(d) }
            let text = String(decoding: buffer.prefix(Int(written)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .float(Double(text) ?? d)
        }
        let scale = pow(10.0, Double(precision))
        let scaled = number.double * scale
        return .float((method == "ceil" ? ceil(scaled) : floor(scaled)) / scale)
    }
}

private extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
