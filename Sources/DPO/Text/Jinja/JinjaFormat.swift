// How values print: Python's `str()` and `repr()` (what `{{ x }}`, `~` and the `string` filter produce)
// and `json.dumps` (the `tojson` filter as transformers defines it: ensure_ascii=False, key order kept).

extension JinjaValue {
    /// Python's `str(value)` as jinja2 prints it: undefined is "", strings are themselves, everything
    /// else its `repr`. Functions have no reproducible text and are an error.
    func pythonStr() throws -> String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return try pythonRepr()
        }
    }

    /// Python's `repr(value)`: `None`, `True`, `1.5`, `'it\'s'`, `[1, 'a']`, `(1,)`, `{'k': 'v'}`.
    func pythonRepr(depth: Int = 0) throws -> String {
        if depth > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
        switch self {
        case .undefined: return "Undefined"
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .float(let d): return pythonFloatRepr(d)
        case .string(let s): return pythonStringRepr(s)
        case .list(let items):
            return "[" + (try items.map { try $0.pythonRepr(depth: depth + 1) }).joined(separator: ", ") + "]"
        case .tuple(let items):
            let inner = try items.map { try $0.pythonRepr(depth: depth + 1) }
            return inner.count == 1 ? "(" + inner[0] + ",)" : "(" + inner.joined(separator: ", ") + ")"
        case .dict(let d):
            return try dictRepr(d, depth: depth)
        case .namespace(let ns):
            return "<Namespace " + (try dictRepr(ns.attributes, depth: depth)) + ">"
        case .callable(let f):
            throw JinjaRuntimeError("cannot print the function '\(f.name)' (call it instead)")
        }
    }

    private func dictRepr(_ d: JinjaDict, depth: Int) throws -> String {
        let inner = try d.pairs.map { pythonStringRepr($0.0) + ": " + (try $0.1.pythonRepr(depth: depth + 1)) }
        return "{" + inner.joined(separator: ", ") + "}"
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when the decimal
/// exponent is in [-4, 16) ("0.0001", "1e-05", "1234567890123456.0", "1e+16"), "inf", "nan".
func pythonFloatRepr(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    let sign = d.sign == .minus ? "-" : ""
    if d == 0 { return sign + "0.0" }
    let (digits, decpt) = shortestDigits(abs(d))
    let exponent = decpt - 1
    if exponent >= -4 && exponent < 16 {
        if decpt <= 0 { return sign + "0." + String(repeating: "0", count: -decpt) + digits }
        if decpt >= digits.count { return sign + digits + String(repeating: "0", count: decpt - digits.count) + ".0" }
        let cut = digits.index(digits.startIndex, offsetBy: decpt)
        return sign + digits[..<cut] + "." + digits[cut...]
    }
    var mantissa = String(digits.prefix(1))
    if digits.count > 1 { mantissa += "." + digits.dropFirst() }
    let expDigits = String(abs(exponent))
    return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + (expDigits.count < 2 ? "0" : "") + expDigits
}

/// The shortest round-trip decimal digits of a positive finite double (from Swift's `description`,
/// which is shortest round-trip too), and the position of the decimal point: value = 0.DIGITS × 10^decpt.
private func shortestDigits(_ d: Double) -> (String, Int) {
    let text = d.description
    var mantissa = Substring(text)
    var exp = 0
    if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        mantissa = text[..<e]
        exp = Int(text[text.index(after: e)...]) ?? 0
    }
    let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
    let intPart = parts.first.map(String.init) ?? ""
    let fracPart = parts.count > 1 ? String(parts[1]) : ""
    var digits = Array(intPart + fracPart)
    var decpt = intPart.count + exp
    while let first = digits.first, first == "0" { digits.removeFirst(); decpt -= 1 }
    while let last = digits.last, last == "0" { digits.removeLast() }
    return (String(digits), decpt)
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote;
/// backslash escapes for the quote, backslash, \t \n \r, other control and non-printable characters.
func pythonStringRepr(_ s: String) -> String {
    let quote: Unicode.Scalar = (s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"")) ? "\"" : "'"
    var out = String(quote)
    for c in s.unicodeScalars {
        switch c {
        case quote, "\\": out += "\\"; out.unicodeScalars.append(c)
        case "\t": out += "\\t"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        default:
            if c.value < 0x20 || c.value == 0x7F {
                out += "\\x" + hexDigits(c.value, width: 2)
            } else if c.value < 0x7F || isPythonPrintable(c) {
                out.unicodeScalars.append(c)
            } else if c.value <= 0xFF {
                out += "\\x" + hexDigits(c.value, width: 2)
            } else if c.value <= 0xFFFF {
                out += "\\u" + hexDigits(c.value, width: 4)
            } else {
                out += "\\U" + hexDigits(c.value, width: 8)
            }
        }
    }
    out.unicodeScalars.append(quote)
    return out
}

/// Python's `str.isprintable()` for one character: not a control, format, surrogate, private-use,
/// unassigned or separator character (the space itself is printable).
private func isPythonPrintable(_ c: Unicode.Scalar) -> Bool {
    if c == " " { return true }
    switch c.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
        return false
    default:
        return true
    }
}

private func hexDigits(_ v: UInt32, width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}

/// Python's `str.isspace()` for one character (what `strip()`, `split()` and the `\s` of jinja2's
/// whitespace control remove).
func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
    switch c.value {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
        return true
    default:
        return false
    }
}

// MARK: - json.dumps

/// Options of Python's `json.dumps` that `tojson` exposes.
struct JSONDumpOptions {
    /// nil: one line; otherwise the text repeated once per nesting level (an int n means n spaces).
    var indent: String? = nil
    var itemSeparator: String? = nil
    var keySeparator = ": "
    var sortKeys = false
    var ensureASCII = false
}

/// Python's `json.dumps(value, ...)`. Undefined, namespaces and functions are not JSON serializable.
func pythonJSONDumps(_ value: JinjaValue, _ options: JSONDumpOptions) throws -> String {
    var out = ""
    let itemSeparator = options.itemSeparator ?? (options.indent == nil ? ", " : ",")
    try writeJSON(value, options, itemSeparator, level: 0, into: &out)
    return out
}

private func writeJSON(_ value: JinjaValue, _ options: JSONDumpOptions, _ itemSeparator: String,
                       level: Int, into out: inout String) throws {
    if level > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
    func newline(_ depth: Int) {
        guard let indent = options.indent else { return }
        out += "\n"
        for _ in 0..<depth { out += indent }
    }
    switch value {
    case .none: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .int(let i): out += String(i)
    case .float(let d):
        if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += pythonFloatRepr(d) }
    case .string(let s): writeJSONString(s, ensureASCII: options.ensureASCII, into: &out)
    case .list(let items), .tuple(let items):
        if items.isEmpty { out += "[]"; return }
        out += "["
        for (i, item) in items.enumerated() {
            if i > 0 { out += itemSeparator }
            newline(level + 1)
            try writeJSON(item, options, itemSeparator, level: level + 1, into: &out)
        }
        newline(level)
        out += "]"
    case .dict(let d):
        if d.count == 0 { out += "{}"; return }
        var pairs = d.pairs
        if options.sortKeys { pairs.sort { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) } }
        out += "{"
        for (i, (key, item)) in pairs.enumerated() {
            if i > 0 { out += itemSeparator }
            newline(level + 1)
            writeJSONString(key, ensureASCII: options.ensureASCII, into: &out)
            out += options.keySeparator
            try writeJSON(item, options, itemSeparator, level: level + 1, into: &out)
        }
        newline(level)
        out += "}"
    case .undefined, .namespace, .callable:
        throw JinjaRuntimeError("tojson: Object of type \(value.typeName) is not JSON serializable")
    }
}

