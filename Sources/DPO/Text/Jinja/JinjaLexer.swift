// The Jinja lexer: template text to tokens, with jinja2's whitespace rules as transformers configures
// them (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False). The rules follow jinja2's
// lexer.py (`Lexer.tokeniter`):
//   * newlines (\r\n, \r, \n) become \n, and one trailing newline of the template is dropped;
//   * `{%-`, `{{-`, `{#-` remove all whitespace before the tag; `-%}`, `-}}`, `-#}` all whitespace after;
//   * trim_blocks: a single \n right after `%}` or `#}` is removed (not after `+%}` / `+#}`, nor `}}`);
//   * lstrip_blocks: spaces and tabs between the start of a line and `{%` or `{#` are removed
//     (not before `{{`, nor with `{%+`).

/// A line:column position in a template (both 1-based, columns counted in Unicode scalars).
public struct JinjaPosition: Equatable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public var description: String { "\(line):\(column)" }
}

enum JinjaTokenKind: Equatable {
    case text(String)
    case variableBegin, variableEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    case op(String)
    case end
}

struct JinjaToken {
    let kind: JinjaTokenKind
    let position: JinjaPosition
}

/// A template syntax error, with its position.
struct JinjaSyntaxError: Error {
    let message: String
    let position: JinjaPosition
}

struct JinjaLexer {
    private let src: [Unicode.Scalar]
    private var lineStarts: [Int] = [0]
    private var tokens: [JinjaToken] = []

    init(_ source: String) {
        // Newline normalization and the dropped trailing newline (jinja2: keep_trailing_newline=False).
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var it = source.unicodeScalars.makeIterator()
        var pendingCR = false
        while let c = it.next() {
            if pendingCR {
                pendingCR = false
                if c == "\n" { continue }
            }
            if c == "\r" { scalars.append("\n"); pendingCR = true } else { scalars.append(c) }
        }
        if scalars.last == "\n" { scalars.removeLast() }
        src = scalars
        for (i, c) in src.enumerated() where c == "\n" { lineStarts.append(i + 1) }
    }

    func position(_ offset: Int) -> JinjaPosition {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return JinjaPosition(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }

    private func fail(_ message: String, at offset: Int) -> JinjaSyntaxError {
        JinjaSyntaxError(message: message, position: position(offset))
    }

    private func at(_ i: Int, _ s: String) -> Bool {
        var k = i
        for c in s.unicodeScalars {
            guard k < src.count, src[k] == c else { return false }
            k += 1
        }
        return true
    }

    mutating func tokenize() throws -> [JinjaToken] {
        var pos = 0
        var lineStarting = true
        let n = src.count
        while pos < n {
            // Root state: text up to the next `{{`, `{%` or `{#`.
            var i = pos
            while i + 1 < n && !(src[i] == "{" && (src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#")) { i += 1 }
            if i + 1 >= n {
                emitText(src[pos..<n], at: pos)
                break
            }
            let kind = src[i + 1]
            var j = i + 2
            var sign: Unicode.Scalar? = nil
            if j < n && (src[j] == "-" || src[j] == "+") { sign = src[j]; j += 1 }
            var text = src[pos..<i]
            if sign == "-" {
                while let last = text.last, isPythonSpace(last) { text = text.dropLast() }
            } else if sign != "+" && kind != "{" {
                // lstrip_blocks: only spaces/tabs between the line start and the tag.
                var lineStart = text.startIndex
                if let nl = text.lastIndex(of: "\n") { lineStart = nl + 1 }
                if (lineStart > text.startIndex || lineStarting) && text[lineStart...].allSatisfy({ $0 == " " || $0 == "\t" }) {
                    text = text[text.startIndex..<lineStart]
                }
            }
            emitText(text, at: pos)
            if kind == "#" {
                (pos, lineStarting) = try skipComment(from: j, begin: i)
                continue
            }
            let isBlock = kind == "%"
            tokens.append(JinjaToken(kind: isBlock ? .blockBegin : .variableBegin, position: position(i)))
            if isBlock { try refuseRaw(from: j) }
            (pos, lineStarting) = try lexTag(from: j, isBlock: isBlock, begin: i)
        }
        tokens.append(JinjaToken(kind: .end, position: position(n)))
        return tokens
    }

    private mutating func emitText(_ text: ArraySlice<Unicode.Scalar>, at offset: Int) {
        guard !text.isEmpty else { return }
        var s = ""
        s.unicodeScalars.append(contentsOf: text)
        tokens.append(JinjaToken(kind: .text(s), position: position(offset)))
    }

    /// Skips a comment whose body starts at `from`; returns where text resumes and whether it resumes at a line start.
    private func skipComment(from: Int, begin: Int) throws -> (Int, Bool) {
        var k = from
        while k < src.count {
            if at(k, "+#}") { return (k + 3, false) }
            if at(k, "-#}") {
                var e = k + 3
                while e < src.count && isPythonSpace(src[e]) { e += 1 }
                return (e, e > k + 3 && src[e - 1] == "\n")
            }
            if at(k, "#}") {
                if k + 2 < src.count && src[k + 2] == "\n" { return (k + 3, true) }
                return (k + 2, false)
            }
            k += 1
        }
        throw fail("missing end of comment tag '#}'", at: begin)
    }

    /// `{% raw %}` switches jinja2's lexer into a mode this interpreter does not have.
    private func refuseRaw(from: Int) throws {
        var k = from
        while k < src.count && isPythonSpace(src[k]) { k += 1 }
        if at(k, "raw") && !(k + 3 < src.count && isNameContinue(src[k + 3])) {
            throw fail("unsupported statement 'raw'", at: k)
        }
    }

    /// Lexes the inside of `{{ ... }}` or `{% ... %}` up to and including its end.
    private mutating func lexTag(from: Int, isBlock: Bool, begin: Int) throws -> (Int, Bool) {
        var k = from
        var brackets: [Unicode.Scalar] = []
        let n = src.count
        while k < n {
            if brackets.isEmpty {
                if isBlock {
                    if at(k, "+%}") { tokens.append(JinjaToken(kind: .blockEnd, position: position(k))); return (k + 3, false) }
                    if at(k, "-%}") {
                        tokens.append(JinjaToken(kind: .blockEnd, position: position(k)))
                        var e = k + 3
                        while e < n && isPythonSpace(src[e]) { e += 1 }
                        return (e, e > k + 3 && src[e - 1] == "\n")
                    }
                    if at(k, "%}") {
                        tokens.append(JinjaToken(kind: .blockEnd, position: position(k)))
                        if k + 2 < n && src[k + 2] == "\n" { return (k + 3, true) }
                        return (k + 2, false)
                    }
                } else {
                    if at(k, "-}}") {
                        tokens.append(JinjaToken(kind: .variableEnd, position: position(k)))
                        var e = k + 3
                        while e < n && isPythonSpace(src[e]) { e += 1 }
                        return (e, e > k + 3 && src[e - 1] == "\n")
                    }
                    if at(k, "}}") { tokens.append(JinjaToken(kind: .variableEnd, position: position(k))); return (k + 2, false) }
                }
            }
            let c = src[k]
            if isPythonSpace(c) { k += 1; continue }
            if let (token, next) = try number(at: k) {
                tokens.append(JinjaToken(kind: token, position: position(k)))
                k = next
                continue
            }
            if isNameStart(c) {
                var e = k + 1
                while e < n && isNameContinue(src[e]) { e += 1 }
                var name = ""
                name.unicodeScalars.append(contentsOf: src[k..<e])
                tokens.append(JinjaToken(kind: .name(name), position: position(k)))
                k = e
                continue
            }
            if c == "'" || c == "\"" {
                let (value, next) = try stringLiteral(at: k)
                tokens.append(JinjaToken(kind: .string(value), position: position(k)))
                k = next
                continue
            }
            if let op = Self.operators.first(where: { at(k, $0) }) {
                switch op {
                case "(", "[", "{": brackets.append(op == "(" ? "(" : op == "[" ? "[" : "{")
                case ")", "]", "}":
                    let open: Unicode.Scalar = op == ")" ? "(" : op == "]" ? "[" : "{"
                    guard brackets.last == open else { throw fail("unexpected '\(op)'", at: k) }
                    brackets.removeLast()
                default: break
                }
                tokens.append(JinjaToken(kind: .op(op), position: position(k)))
                k += op.unicodeScalars.count
                continue
            }
            throw fail("unexpected character '\(String(c))'", at: k)
        }
        throw fail("unexpected end of template, the \(isBlock ? "'{%'" : "'{{'") tag is not closed", at: begin)
    }

    /// Operators, longest first (jinja2's operator table).
    private static let operators = ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
                                    "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"]

    private func isNameStart(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
    }

    private func isNameContinue(_ c: Unicode.Scalar) -> Bool {
        isNameStart(c) || isDigit(c)
    }

    private func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    /// Digits with single underscores between them (`1_000`), as jinja2's number rules allow.
    private func digitRun(_ k: Int, _ valid: (Unicode.Scalar) -> Bool) -> Int {
        var e = k
        guard e < src.count, valid(src[e]) else { return k }
        e += 1
        while e < src.count {
            if valid(src[e]) { e += 1 } else if src[e] == "_" && e + 1 < src.count && valid(src[e + 1]) { e += 2 } else { break }
        }
        return e
    }

    /// A float or integer literal at `k` (jinja2's float_re, then integer_re), or nil.
    private func number(at k: Int) throws -> (JinjaTokenKind, Int)? {
        guard isDigit(src[k]) else { return nil }
        // Float: digits, then a fraction and/or an exponent; not right after a '.' (so `a.0.1` is two lookups).
        if k == 0 || src[k - 1] != "." {
            let intEnd = digitRun(k, isDigit)
            var e = intEnd
            var isFloat = false
            if e < src.count && src[e] == ".", digitRun(e + 1, isDigit) > e + 1 { e = digitRun(e + 1, isDigit); isFloat = true }
            if e < src.count && (src[e] == "e" || src[e] == "E") {
                var x = e + 1
                if x < src.count && (src[x] == "+" || src[x] == "-") { x += 1 }
                let expEnd = digitRun(x, isDigit)
                if expEnd > x { e = expEnd; isFloat = true }
            }
            if isFloat {
                var text = ""
                text.unicodeScalars.append(contentsOf: src[k..<e].filter { $0 != "_" })
                guard let value = Double(text) else { throw fail("invalid number '\(text)'", at: k) }
                return (.float(value), e)
            }
        }
        // Integer: 0b/0o/0x prefixes, or decimal.
        var radix = 10
        var start = k
        if src[k] == "0" && k + 1 < src.count {
            switch src[k + 1] {
            case "b", "B": radix = 2
            case "o", "O": radix = 8
            case "x", "X": radix = 16
            default: break
            }
        }
        let valid: (Unicode.Scalar) -> Bool
        switch radix {
        case 2: valid = { $0 == "0" || $0 == "1" }
        case 8: valid = { $0 >= "0" && $0 <= "7" }
        case 16: valid = { self.isDigit($0) || ($0 >= "a" && $0 <= "f") || ($0 >= "A" && $0 <= "F") }
        default: valid = isDigit
        }
        var end: Int
        if radix != 10 {
            start = k + 2
            // An underscore may follow the prefix (`0x_ff`).
            let first = start < src.count && src[start] == "_" ? start + 1 : start
            end = digitRun(first, valid)
            if end == first { radix = 10; start = k; end = digitRun(k, isDigit) }
        } else {
            end = digitRun(k, isDigit)
        }
        var text = ""
        text.unicodeScalars.append(contentsOf: src[start..<end].filter { $0 != "_" })
        guard let value = Int(text, radix: radix) else { throw fail("integer literal '\(text)' is too large", at: k) }
        return (.integer(value), end)
    }

    /// A quoted string literal at `k`, decoded like jinja2 does (Python's unicode-escape rules).
    private func stringLiteral(at k: Int) throws -> (String, Int) {
        let quote = src[k]
        var e = k + 1
        var out = ""
        while e < src.count {
            let c = src[e]
            if c == quote { return (out, e + 1) }
            if c != "\\" { out.unicodeScalars.append(c); e += 1; continue }
            guard e + 1 < src.count else { break }
            let x = src[e + 1]
            e += 2
            switch x {
            case "\n": break  // line continuation
            case "\\": out += "\\"
            case "'": out += "'"
            case "\"": out += "\""
            case "a": out += "\u{07}"
            case "b": out += "\u{08}"
            case "f": out += "\u{0C}"
            case "n": out += "\n"
            case "r": out += "\r"
            case "t": out += "\t"
            case "v": out += "\u{0B}"
            case "0"..."7":
                var value = x.value - 0x30
                var count = 1
                while count < 3, e < src.count, src[e] >= "0", src[e] <= "7" {
                    value = value * 8 + src[e].value - 0x30
                    e += 1
                    count += 1
                }
                guard let scalar = Unicode.Scalar(value) else { throw fail("invalid escape in string", at: e) }
                out.unicodeScalars.append(scalar)
            case "x", "u", "U":
                let width = x == "x" ? 2 : x == "u" ? 4 : 8
                guard e + width <= src.count else { throw fail("truncated \\\(x) escape in string", at: e - 2) }
                var hex = ""
                hex.unicodeScalars.append(contentsOf: src[e..<(e + width)])
                guard let value = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(value) else {
                    throw fail("invalid \\\(x) escape in string", at: e - 2)
                }
                out.unicodeScalars.append(scalar)
                e += width
            case "N":
                throw fail("unsupported \\N{...} escape in string", at: e - 2)
            default:
                // Unknown escapes stay as written. jinja2 first turns a non-ASCII character into its
                // backslash escape (backslashreplace), so "\é" reads back as "\xe9" spelled out.
                out += "\\"
                if x.value > 0x7F {
                    let width = x.value <= 0xFF ? 2 : x.value <= 0xFFFF ? 4 : 8
                    let letter = x.value <= 0xFF ? "x" : x.value <= 0xFFFF ? "u" : "U"
                    let hex = String(x.value, radix: 16)
                    out += letter + String(repeating: "0", count: max(0, width - hex.count)) + hex
                } else {
                    out.unicodeScalars.append(x)
                }
            }
        }
        throw fail("unterminated string literal", at: k)
    }
}
