// A strict RFC 8259 JSON parser and a serializer, without Foundation.
//
// Parsing is strict: no comments, no trailing commas, no NaN/Infinity, no leading zeros,
// no unescaped control characters, no invalid UTF-8, no lone surrogates, nothing after the
// top-level value but whitespace. Nesting is limited to `JSON.maxDepth` levels so hostile
// input can never overflow the stack. Duplicate object keys are accepted; the last value wins
// (and the key keeps the position of its first occurrence, as in Python's `json`).

/// A parsed JSON value.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)
}

/// A JSON object that remembers the insertion order of its keys (equality ignores the order).
public typealias JSONObject = OrderedMap<JSONValue>

// MARK: - Accessors

extension JSONValue {
    /// The number as an `Int`, if it is a number with no fractional part that fits in `Int`.
    public var int: Int? {
        guard case .number(let d) = self, d.isFinite, d == d.rounded(.towardZero),
              d >= -0x1p63, d < 0x1p63 else { return nil }
        return Int(d)
    }

    /// The number, if this is a number.
    public var double: Double? {
        if case .number(let d) = self { return d }
        return nil
    }

    /// The string, if this is a string.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The Boolean, if this is `true` or `false`.
    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The elements, if this is an array.
    public var array: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The object, if this is an object.
    public var object: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// Whether this is `null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

// MARK: - Entry points

/// JSON parsing and serialization.
public enum JSON {
    /// The deepest nesting of arrays and objects the parser accepts.
    public static let maxDepth = 512

    /// Parses one JSON text (UTF-8). Throws `DPOError.format("... at byte N")` on malformed input.
    /// With `uniqueKeys`, an object that repeats a key is malformed too (safetensors headers,
    /// where "last wins" would let one tensor entry silently hide another).
    public static func parse(_ bytes: [UInt8], uniqueKeys: Bool = false) throws -> JSONValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            parser.uniqueKeys = uniqueKeys
            return try parser.parseDocument()
        }
    }

    /// Parses one JSON text.
    public static func parse(_ text: String) throws -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// Serializes `value`. With `pretty`, the layout matches Python's `json.dumps(v, indent=2,
    /// ensure_ascii=False)`; otherwise it is compact with no whitespace at all.
    /// Non-finite numbers, which JSON cannot represent, are written as `null`.
    public static func serialize(_ value: JSONValue, pretty: Bool = true) -> String {
        var out = ""
        writeValue(value, into: &out, pretty: pretty, indent: 0)
        return out
    }
}

// MARK: - Parser

/// A recursive-descent parser over a byte buffer that is valid for the parser's lifetime.
private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var pos = 0
    var depth = 0
    var uniqueKeys = false

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func error(_ what: String, at offset: Int? = nil) -> DPOError {
        .format("invalid JSON: \(what) at byte \(offset ?? pos)")
    }

    var atEnd: Bool { pos >= bytes.count }

    /// The current byte, or nil at the end of input.
    var peek: UInt8? { pos < bytes.count ? bytes[pos] : nil }

    mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    mutating func parseDocument() throws -> JSONValue {
        // A leading UTF-8 byte order mark is rejected like any other unexpected byte.
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        if !atEnd { throw error("unexpected data after the top-level value") }
        return value
    }

    mutating func parseValue() throws -> JSONValue {
        guard let byte = peek else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"): return .object(try parseObject())
        case UInt8(ascii: "["): return .array(try parseArray())
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("unexpected character '\(printable(byte))'")
        }
    }

    mutating func expectLiteral(_ word: StaticString) throws {
        let start = pos
        let count = word.utf8CodeUnitCount
        let matches = word.withUTF8Buffer { w in
            pos + count <= bytes.count && (0..<count).allSatisfy { bytes[pos + $0] == w[$0] }
        }
        if !matches { throw error("invalid literal", at: start) }
        pos += count
    }

    mutating func enterNesting() throws {
        depth += 1
        if depth > JSON.maxDepth { throw error("nesting deeper than \(JSON.maxDepth) levels") }
    }

    mutating func parseObject() throws -> JSONObject {
        try enterNesting()
        pos += 1  // '{'
        var object = JSONObject()
        skipWhitespace()
        if peek == UInt8(ascii: "}") { pos += 1; depth -= 1; return object }
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw error(atEnd ? "unexpected end of input" : "expected a string key") }
            let keyStart = pos
            let key = try parseString()
            if uniqueKeys && object[key] != nil { throw error("duplicate key '\(key)'", at: keyStart) }
            skipWhitespace()
            guard peek == UInt8(ascii: ":") else { throw error("expected ':' after object key") }
            pos += 1
            skipWhitespace()
            object[key] = try parseValue()
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","): pos += 1
            case UInt8(ascii: "}"): pos += 1; depth -= 1; return object
            case nil: throw error("unexpected end of input in object")
            default: throw error("expected ',' or '}' in object")
            }
        }
    }

    mutating func parseArray() throws -> [JSONValue] {
        try enterNesting()
        pos += 1  // '['
        var array: [JSONValue] = []
        skipWhitespace()
        if peek == UInt8(ascii: "]") { pos += 1; depth -= 1; return array }
        while true {
            skipWhitespace()
            array.append(try parseValue())
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","): pos += 1
            case UInt8(ascii: "]"): pos += 1; depth -= 1; return array
            case nil: throw error("unexpected end of input in array")
            default: throw error("expected ',' or ']' in array")
            }
        }
    }

    /// Parses a number per the RFC grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func parseNumber() throws -> Double {
        let start = pos
        func isDigit(_ b: UInt8?) -> Bool { b.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }
        if peek == UInt8(ascii: "-") { pos += 1 }
        if peek == UInt8(ascii: "0") {
            pos += 1
            if isDigit(peek) { throw error("leading zero in number", at: start) }
        } else if isDigit(peek) {
            while isDigit(peek) { pos += 1 }
        } else {
            throw error("invalid number", at: start)
        }
        if peek == UInt8(ascii: ".") {
            pos += 1
            guard isDigit(peek) else { throw error("expected digit after '.'") }
            while isDigit(peek) { pos += 1 }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            pos += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { pos += 1 }
            guard isDigit(peek) else { throw error("expected digit in exponent") }
            while isDigit(peek) { pos += 1 }
        }
        // The text is now known to be a valid JSON number, which Double's parser (correctly rounded)
        // accepts. A value too large for a Double parses as infinity: reject it.
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else {
            throw error("number out of range", at: start)
        }
        return value
    }

    /// Parses a string literal starting at the opening quote.
    mutating func parseString() throws -> String {
        let start = pos
        pos += 1  // opening '"'
        // Fast path: no escapes. Find the closing quote, copying nothing.
        var scan = pos
        while scan < bytes.count {
            let b = bytes[scan]
            if b == UInt8(ascii: "\"") {
                let result = try makeString(UnsafeBufferPointer(rebasing: bytes[pos..<scan]), start: pos)
                pos = scan + 1
                return result
            }
            if b == UInt8(ascii: "\\") || b < 0x20 { break }
            scan += 1
        }
        // Slow path: decode escapes into a scratch buffer.
        var out: [UInt8] = Array(UnsafeBufferPointer(rebasing: bytes[pos..<scan]))
        pos = scan
        while true {
            guard let b = peek else { throw error("unterminated string", at: start) }
            if b == UInt8(ascii: "\"") {
                pos += 1
                return try out.withUnsafeBufferPointer { try makeString($0, start: start + 1) }
            }
            if b < 0x20 { throw error("unescaped control character 0x\(hex2(b)) in string") }
            if b != UInt8(ascii: "\\") { out.append(b); pos += 1; continue }
            pos += 1
            guard let e = peek else { throw error("unterminated string", at: start) }
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"): appendUTF8(try parseUnicodeEscape(), to: &out)
            default: throw error("invalid escape '\\\(printable(e))'", at: pos - 2)
            }
        }
    }

    /// Parses the `XXXX` of a `\uXXXX` escape (already past `\u`), plus a following low-surrogate
    /// escape when the first is a high surrogate. Returns the Unicode scalar value.
    mutating func parseUnicodeEscape() throws -> UInt32 {
        let escapeStart = pos - 2
        let first = try parseHex4()
        switch first {
        case 0xD800...0xDBFF:
            guard pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                throw error("unpaired high surrogate \\u\(hex4(first))", at: escapeStart)
            }
            pos += 2
            let second = try parseHex4()
            guard (0xDC00...0xDFFF).contains(second) else {
                throw error("high surrogate \\u\(hex4(first)) not followed by a low surrogate", at: escapeStart)
            }
            return 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        case 0xDC00...0xDFFF:
            throw error("unpaired low surrogate \\u\(hex4(first))", at: escapeStart)
        default:
            return first
        }
    }

    mutating func parseHex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            pos += 1
        }
        return value
    }

    /// Builds a String from raw UTF-8, rejecting invalid sequences.
    func makeString(_ utf8: UnsafeBufferPointer<UInt8>, start: Int) throws -> String {
        guard let s = String(validating: utf8, as: UTF8.self) else {
            throw error("invalid UTF-8 in string", at: start)
        }
        return s
    }
}

/// Appends the UTF-8 encoding of a Unicode scalar value (never a surrogate here).
private func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
    switch scalar {
    case 0..<0x80:
        out.append(UInt8(scalar))
    case 0x80..<0x800:
        out.append(UInt8(0xC0 | (scalar >> 6)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    case 0x800..<0x10000:
        out.append(UInt8(0xE0 | (scalar >> 12)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    default:
        out.append(UInt8(0xF0 | (scalar >> 18)))
        out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    }
}

private let hexDigits: [Character] = Array("0123456789abcdef")

private func hex2(_ b: UInt8) -> String {
    String([hexDigits[Int(b >> 4)], hexDigits[Int(b & 0xF)]])
}

private func hex4(_ v: UInt32) -> String {
    String((0..<4).reversed().map { hexDigits[Int((v >> (UInt32($0) * 4)) & 0xF)] })
}

/// A byte shown in an error message: itself if printable ASCII, else `0xNN`.
private func printable(_ b: UInt8) -> String {
    (0x21...0x7E).contains(b) ? String(UnicodeScalar(b)) : "0x" + hex2(b)
}

// MARK: - Serializer

private func writeValue(_ value: JSONValue, into out: inout String, pretty: Bool, indent: Int) {
    switch value {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .number(let d): out += formatNumber(d)
    case .string(let s): writeJSONString(s, into: &out)
    case .array(let items):
        if items.isEmpty { out += "[]"; return }
        out += "["
        for (i, item) in items.enumerated() {
            if i > 0 { out += "," }
            newline(&out, pretty: pretty, indent: indent + 1)
            writeValue(item, into: &out, pretty: pretty, indent: indent + 1)
        }
        newline(&out, pretty: pretty, indent: indent)
        out += "]"
    case .object(let object):
        if object.isEmpty { out += "{}"; return }
        out += "{"
        for (i, key) in object.keys.enumerated() {
            if i > 0 { out += "," }
            newline(&out, pretty: pretty, indent: indent + 1)
            writeJSONString(key, into: &out)
            out += pretty ? ": " : ":"
            writeValue(object[key] ?? .null, into: &out, pretty: pretty, indent: indent + 1)
        }
        newline(&out, pretty: pretty, indent: indent)
        out += "}"
    }
}

private func newline(_ out: inout String, pretty: Bool, indent: Int) {
    guard pretty else { return }
    out += "\n"
    out += String(repeating: " ", count: 2 * indent)
}

/// Formats a number as JSON: integral values below 2^53 in magnitude print as integers ("576",
/// "-0"), everything else in Swift's shortest round-trip form ("0.1", "1e-05", "1.5e+300"), which
/// is always valid JSON for finite values. Non-finite values print as `null`.
func formatNumber(_ d: Double) -> String {
    guard d.isFinite else { return "null" }
    if d == d.rounded(.towardZero) && abs(d) < 0x1p53 {
        if d == 0 { return d.sign == .minus ? "-0" : "0" }
        return String(Int64(d))
    }
    return d.description
}

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped, and with
/// `ensureASCII` every character above U+007E as `\uXXXX` (surrogate pairs above U+FFFF), as
/// Python's `json.dumps(ensure_ascii=True)` writes it (the chat templates' `tojson` uses that).
func writeJSONString(_ s: String, ensureASCII: Bool = false, into out: inout String) {
    out += "\""
    // Copy runs of characters that need no escaping in one go.
    var pending = s.unicodeScalars.startIndex
    let scalars = s.unicodeScalars
    var i = scalars.startIndex
    while i < scalars.endIndex {
        let c = scalars[i]
        let escape: String?
        switch c {
        case "\"": escape = "\\\""
        case "\\": escape = "\\\\"
        case "\n": escape = "\\n"
        case "\r": escape = "\\r"
        case "\t": escape = "\\t"
        case "\u{08}": escape = "\\b"
        case "\u{0C}": escape = "\\f"
        default:
            if c.value < 0x20 || (ensureASCII && c.value > 0x7E) {
                if c.value > 0xFFFF {
                    let v = c.value - 0x10000
                    escape = "\\u" + hex4(0xD800 + (v >> 10)) + "\\u" + hex4(0xDC00 + (v & 0x3FF))
                } else {
                    escape = "\\u" + hex4(c.value)
                }
            } else {
                escape = nil
            }
        }
        if let escape {
            // `out += String(...)` appends in place; `out.unicodeScalars.append(contentsOf:)`
            // copied the whole of `out` each time (quadratic in long documents).
            out += String(scalars[pending..<i])
            out += escape
            pending = scalars.index(after: i)
        }
        i = scalars.index(after: i)
    }
    out += String(scalars[pending..<scalars.endIndex])
    out += "\""
}
