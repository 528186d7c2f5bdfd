// Values of the Jinja interpreter: the Python objects a chat template sees (jinja2 runs on Python, so
// truthiness, equality, ordering and `str()` follow Python's rules; JinjaFormat.swift has the printing).

/// A value inside a Jinja template.
public enum JinjaValue {
    /// A name that is not defined (jinja2's default `Undefined`): renders as "", is false, iterates as
    /// empty, and fails on attribute access, arithmetic and calls. The payload says what was missing.
    case undefined(String)
    /// Python's `None`.
    case none
    case bool(Bool)
    /// A Python `int` (64-bit here: overflow is an error, never a wrong value).
    case int(Int)
    case float(Double)
    case string(String)
    case list([JinjaValue])
    /// A Python tuple (from `(a, b)` literals and the `items` filter). Behaves like a list, prints as `(a, b)`.
    case tuple([JinjaValue])
    /// A Python dict with string keys, in insertion order.
    case dict(JinjaDict)
    /// A `namespace(...)` object: the one mutable value, shared by reference.
    case namespace(JinjaNamespace)
    /// A function, filter-like global or bound method.
    case callable(JinjaCallable)
}

/// An insertion-ordered dictionary with string keys.
public struct JinjaDict {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}

    public init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    /// The value for `key`; setting a new key appends it, setting `nil` removes it.
    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var count: Int { keys.count }

    /// The (key, value) pairs in order.
    public var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0] ?? .none) } }

    public var values: [JinjaValue] { keys.map { storage[$0] ?? .none } }
}

/// The object `namespace(...)` returns: attributes that `{% set ns.x = ... %}` can change from inside
/// loops (jinja2's `Namespace`).
public final class JinjaNamespace {
    public var attributes: JinjaDict
    public init(_ attributes: JinjaDict = JinjaDict()) { self.attributes = attributes }
}

/// Positional and keyword arguments of a call.
public struct JinjaArguments {
    public var positional: [JinjaValue]
    public var keywords: [(String, JinjaValue)]

    public init(_ positional: [JinjaValue] = [], keywords: [(String, JinjaValue)] = []) {
        self.positional = positional
        self.keywords = keywords
    }
}

/// A callable value: a global function (`range`, `namespace`, `raise_exception`, ...) or a bound method.
public struct JinjaCallable {
    public let name: String
    public let call: (JinjaArguments) throws -> JinjaValue

    public init(name: String, _ call: @escaping (JinjaArguments) throws -> JinjaValue) {
        self.name = name
        self.call = call
    }
}

// MARK: - Construction

extension JinjaValue {
    /// The template value of a JSON value, as Python's `json.loads` would give it: `null` is None,
    /// numbers with no fractional part (and at most 2^53 in magnitude) are ints, other numbers floats,
    /// arrays lists and objects dicts in key order. (JSON text "1.0" therefore becomes the int 1: the
    /// engine's JSON values do not keep the spelling of numbers.)
    public init(_ json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .number(let d):
            if d.isFinite, d == d.rounded(.towardZero), abs(d) <= 0x1p53 { self = .int(Int(d)) } else { self = .float(d) }
        case .string(let s): self = .string(s)
        case .array(let a): self = .list(a.map(JinjaValue.init))
        case .object(let o):
            var dict = JinjaDict()
            for key in o.keys { dict[key] = JinjaValue(o[key] ?? .null) }
            self = .dict(dict)
        }
    }
}

// MARK: - Python semantics

extension JinjaValue {
    /// Python's `bool(value)`.
    public var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .float(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let a), .tuple(let a): return !a.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .callable: return true
        }
    }

    public var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    public var isNone: Bool {
        if case .none = self { return true }
        return false
    }

    /// The Python type name, for error messages ("str", "int", "dict", ...).
    public var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        }
    }

    /// The elements of a list or tuple.
    var sequenceElements: [JinjaValue]? {
        switch self {
        case .list(let a), .tuple(let a): return a
        default: return nil
        }
    }

    /// The value as a number for arithmetic: bools are ints, as in Python.
    var numeric: JinjaNumber? {
        switch self {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .float(let d): return .float(d)
        default: return nil
        }
    }
}

/// A Python number (bool already folded into int).
enum JinjaNumber {
    case int(Int)
    case float(Double)

    var double: Double {
        switch self {
        case .int(let i): return Double(i)
        case .float(let d): return d
        }
    }
}

/// Python's `==`: numbers compare by value across int/float/bool, containers element-wise (dicts
/// regardless of key order), undefined equals only undefined. Nesting deeper than `depth` is an error.
func jinjaEquals(_ a: JinjaValue, _ b: JinjaValue, depth: Int = 0) throws -> Bool {
    if depth > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
    if let x = a.numeric, let y = b.numeric {
        switch (x, y) {
        case (.int(let i), .int(let j)): return i == j
        default: return exactlyEqual(x, y)
        }
    }
    switch (a, b) {
    case (.undefined, .undefined), (.none, .none): return true
    case (.string(let s), .string(let t)): return s.unicodeScalars.elementsEqual(t.unicodeScalars)
    case (.list(let s), .list(let t)), (.tuple(let s), .tuple(let t)):
        guard s.count == t.count else { return false }
        for (x, y) in zip(s, t) where !(try jinjaEquals(x, y, depth: depth + 1)) { return false }
        return true
    case (.dict(let s), .dict(let t)):
        guard s.count == t.count else { return false }
        for (key, x) in s.pairs {
            guard let y = t[key], try jinjaEquals(x, y, depth: depth + 1) else { return false }
        }
        return true
    case (.namespace(let s), .namespace(let t)): return s === t
    default: return false
    }
}

/// int/float equality without the rounding of converting a large int to Double (Python compares exactly).
private func exactlyEqual(_ x: JinjaNumber, _ y: JinjaNumber) -> Bool {
    switch (x, y) {
    case (.int(let i), .float(let d)), (.float(let d), .int(let i)):
        guard d.isFinite, d == d.rounded(.towardZero), d >= -0x1p63, d < 0x1p63 else { return false }
        return Int(d) == i
    case (.float(let d), .float(let e)): return d == e
    case (.int(let i), .int(let j)): return i == j
    }
}

/// Python's ordering (`<`): numbers, strings (by code point) and lists/tuples of the same kind
/// (lexicographically). Anything else is Python's `TypeError`.
func jinjaLess(_ a: JinjaValue, _ b: JinjaValue, depth: Int = 0) throws -> Bool {
    if depth > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
    if let x = a.numeric, let y = b.numeric {
        if case .int(let i) = x, case .int(let j) = y { return i < j }
        return x.double < y.double
    }
    switch (a, b) {
    case (.string(let s), .string(let t)):
        return s.unicodeScalars.lexicographicallyPrecedes(t.unicodeScalars)
    case (.list(let s), .list(let t)), (.tuple(let s), .tuple(let t)):
        for (x, y) in zip(s, t) where !(try jinjaEquals(x, y, depth: depth + 1)) {
            return try jinjaLess(x, y, depth: depth + 1)
        }
        return s.count < t.count
    default:
        throw JinjaRuntimeError("'<' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
    }
}
