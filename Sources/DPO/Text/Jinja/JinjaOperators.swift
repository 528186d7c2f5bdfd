// Python's binary operators and comparisons on template values (ints overflow into an error, never
// into a wrong number; Python's floor division and modulo signs).

#if canImport(Glibc)
import Glibc
#endif

enum JinjaOperators {
    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, _ ev: JinjaEvaluator) throws -> JinjaValue {
        if case .undefined(let what) = a { throw JinjaRuntimeError("'\(what)' is undefined") }
        if case .undefined(let what) = b { throw JinjaRuntimeError("'\(what)' is undefined") }
        if let x = a.numeric, let y = b.numeric { return try arithmetic(op, x, y) }
        switch (op, a, b) {
        case ("+", .string(let s), .string(let t)):
            try ev.checkLength(s.utf8.count + t.utf8.count, "the string")
            return .string(s + t)
        case ("+", .list(let s), .list(let t)):
            try ev.checkLength(s.count + t.count, "the list")
            return .list(s + t)
        case ("+", .tuple(let s), .tuple(let t)):
            try ev.checkLength(s.count + t.count, "the tuple")
            return .tuple(s + t)
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = (a.numeric == nil ? b : a).intValue else { break }
            try ev.checkLength(n <= 0 ? 0 : s.utf8.count.multipliedReportingOverflow(by: n).overflow ? Int.max : s.utf8.count * n, "the string")
            return .string(n <= 0 || s.isEmpty ? "" : String(repeating: s, count: n))
        case ("*", .list(let s), _), ("*", _, .list(let s)):
            guard let n = (a.numeric == nil ? b : a).intValue else { break }
            try ev.checkLength(n <= 0 ? 0 : s.count.multipliedReportingOverflow(by: n).overflow ? Int.max : s.count * n, "the list")
            return .list(n <= 0 || s.isEmpty ? [] : Array([[JinjaValue]](repeating: s, count: n).joined()))
        case ("%", .string, _):
            throw JinjaRuntimeError("unsupported printf-style string formatting ('%' on a string)")
        default:
            break
        }
        if op == "+", case .string = a {
            throw JinjaRuntimeError("can only concatenate str (not \"\(b.typeName)\") to str")
        }
        throw JinjaRuntimeError("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
    }

    private static func arithmetic(_ op: String, _ x: JinjaNumber, _ y: JinjaNumber) throws -> JinjaValue {
        if case .int(let i) = x, case .int(let j) = y {
            func checked(_ r: (Int, Bool)) throws -> JinjaValue {
                if r.1 { throw JinjaRuntimeError("integer overflow in '\(op)'") }
                return .int(r.0)
            }
            switch op {
            case "+": return try checked(i.addingReportingOverflow(j))
            case "-": return try checked(i.subtractingReportingOverflow(j))
            case "*": return try checked(i.multipliedReportingOverflow(by: j))
            case "/":
                guard j != 0 else { throw JinjaRuntimeError("division by zero") }
                return .float(Double(i) / Double(j))
            case "//", "%":
                guard j != 0 else { throw JinjaRuntimeError("integer division or modulo by zero") }
                if i == Int.min && j == -1 {
                    if op == "%" { return .int(0) }
                    throw JinjaRuntimeError("integer overflow in '//'")
                }
                var q = i / j, r = i % j
                if r != 0 && ((r < 0) != (j < 0)) { q -= 1; r += j }
                return .int(op == "//" ? q : r)
            case "**":
                if j < 0 { return .float(pow(Double(i), Double(j))) }
                var result = 1, base = i, e = j
                while e > 0 {
                    if e & 1 == 1 { result = try checkedInt(result.multipliedReportingOverflow(by: base)) }
                    e >>= 1
                    if e > 0 { base = try checkedInt(base.multipliedReportingOverflow(by: base)) }
                }
                return .int(result)
            default: break
            }
        }
        let a = x.double, b = y.double
        switch op {
        case "+": return .float(a + b)
        case "-": return .float(a - b)
        case "*": return .float(a * b)
        case "/":
            guard b != 0 else { throw JinjaRuntimeError("division by zero") }
            return .float(a / b)
        case "//", "%":
            guard b != 0 else { throw JinjaRuntimeError("float floor division or modulo by zero") }
            let (div, mod) = floatDivMod(a, b)
            return .float(op == "//" ? div : mod)
        case "**":
            if a == 0 && b < 0 { throw JinjaRuntimeError("0.0 cannot be raised to a negative power") }
            if a < 0 && b != b.rounded() { throw JinjaRuntimeError("negative number cannot be raised to a fractional power") }
            return .float(pow(a, b))
        default:
            throw JinjaRuntimeError("unknown operator '\(op)'")
        }
    }

    private static func checkedInt(_ r: (partialValue: Int, overflow: Bool)) throws -> Int {
        if r.overflow { throw JinjaRuntimeError("integer overflow in '**'") }
        return r.partialValue
    }

    /// Python's float `divmod` (Objects/floatobject.c, float_divmod).
    private static func floatDivMod(_ vx: Double, _ wx: Double) -> (Double, Double) {
        var mod = fmod(vx, wx)
        var div = (vx - mod) / wx
        if mod != 0 {
            if (wx < 0) != (mod < 0) { mod += wx; div -= 1 }
        } else {
            mod = copysign(0, wx)
        }
        var floordiv: Double
        if div != 0 {
            floordiv = floor(div)
            if div - floordiv > 0.5 { floordiv += 1 }
        } else {
            floordiv = copysign(0, vx / wx)
        }
        return (floordiv, mod)
    }

    /// `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`.
    static func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        switch op {
        case "==": return try jinjaEquals(a, b)
        case "!=": return !(try jinjaEquals(a, b))
        case "in": return try contains(b, a)
        case "not in": return !(try contains(b, a))
        default: break
        }
        if case .undefined(let what) = a { throw JinjaRuntimeError("'\(what)' is undefined") }
        if case .undefined(let what) = b { throw JinjaRuntimeError("'\(what)' is undefined") }
        switch op {
        case "<": return try jinjaLess(a, b)
        case ">": return try jinjaLess(b, a)
        case "<=": return try jinjaLess(a, b) || jinjaEquals(a, b)
        case ">=": return try jinjaLess(b, a) || jinjaEquals(a, b)
        default: throw JinjaRuntimeError("unknown comparison '\(op)'")
        }
    }

    /// Whether `needle` occurs in `haystack`, in O(haystack + needle) (Knuth-Morris-Pratt), so no
    /// pair of long strings makes it quadratic.
    static func containsBytes(_ haystack: UnsafeBufferPointer<UInt8>, _ needle: UnsafeBufferPointer<UInt8>) -> Bool {
        let m = needle.count
        if m == 0 { return true }
        if m > haystack.count { return false }
        // fail[i]: length of the longest proper border of needle[0...i].
        var fail = [Int32](repeating: 0, count: m)
        var k = 0
        for i in 1..<max(m, 1) {
            while k > 0 && needle[i] != needle[k] { k = Int(fail[k - 1]) }
            if needle[i] == needle[k] { k += 1 }
            fail[i] = Int32(k)
        }
        k = 0
        for b in haystack {
            while k > 0 && b != needle[k] { k = Int(fail[k - 1]) }
            if b == needle[k] { k += 1 }
            if k == m { return true }
        }
        return false
    }

    /// Python's `item in container`.
    static func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let t) = item else {
                throw JinjaRuntimeError("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            // A byte search: in valid UTF-8 a match of whole scalars is a match of their bytes.
            var (haystack, needle) = (s, t)
            return haystack.withUTF8 { h in needle.withUTF8 { n in containsBytes(h, n) } }
        case .list(let a), .tuple(let a):
            for x in a where try jinjaEquals(x, item) { return true }
            return false
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            return false
        case .undefined:
            return false
        default:
            throw JinjaRuntimeError("argument of type '\(container.typeName)' is not iterable")
        }
    }
}

extension JinjaValue {
    /// The value as an `int` if it is an int or a bool.
    var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
}
