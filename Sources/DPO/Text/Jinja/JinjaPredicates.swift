// The tests of `x is name(args)` (jinja2/tests.py), as jinja2 3.1 defines them.

extension JinjaBuiltins {
    static let testNames: Set<String> = [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "filter",
        "float", "ge", ">=", "gt", "greaterthan", ">", "in", "integer", "iterable", "le", "<=", "lower", "lt", "lessthan",
        "<", "mapping", "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined",
        "upper",
    ]

    static func test(_ name: String, _ v: JinjaValue, _ args: JinjaArguments, _ ev: JinjaEvaluator) throws -> Bool {
        let what = "test '\(name)'"
        func one() throws -> JinjaValue {
            guard let other = try args.bind(["other"], what)[0] else { throw JinjaRuntimeError("\(what) needs an argument") }
            return other
        }
        func none() throws { _ = try args.bind([], what) }
        switch name {
        case "boolean": try none(); if case .bool = v { return true }; return false
        case "callable": try none(); if case .callable = v { return true }; return false
        case "defined": try none(); return !v.isUndefined
        case "undefined": try none(); return v.isUndefined
        case "none": try none(); return v.isNone
        case "true": try none(); if case .bool(true) = v { return true }; return false
        case "false": try none(); if case .bool(false) = v { return true }; return false
        case "integer": try none(); if case .int = v { return true }; return false
        case "float": try none(); if case .float = v { return true }; return false
        case "number": try none(); return v.numeric != nil
        case "string": try none(); if case .string = v { return true }; return false
        case "mapping": try none(); if case .dict = v { return true }; return false
        case "iterable":
            try none()
            switch v {
            case .undefined, .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "sequence":
            try none()
            switch v {
            case .undefined, .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "escaped": try none(); return false
        case "odd", "even":
            try none()
            guard case .int(let i) = JinjaValue.from(try JinjaOperators.binary("%", v, .int(2), ev)) else { return false }
            return name == "odd" ? i == 1 : i == 0
        case "divisibleby":
            let r = try JinjaOperators.binary("%", v, try one(), ev)
            return try jinjaEquals(r, .int(0))
        case "lower", "upper":
            try none()
            let s = try v.pythonStr()
            let cased = s.unicodeScalars.filter { $0.properties.isCased }
            guard !cased.isEmpty else { return false }
            return cased.allSatisfy { name == "lower" ? !$0.properties.changesWhenLowercased : !$0.properties.changesWhenUppercased }
        case "eq", "equalto", "==": return try JinjaOperators.compare("==", v, try one())
        case "ne", "!=": return try JinjaOperators.compare("!=", v, try one())
        case "lt", "lessthan", "<": return try JinjaOperators.compare("<", v, try one())
        case "le", "<=": return try JinjaOperators.compare("<=", v, try one())
        case "gt", "greaterthan", ">": return try JinjaOperators.compare(">", v, try one())
        case "ge", ">=": return try JinjaOperators.compare(">=", v, try one())
        case "in":
            let a = try args.bind(["seq"], what)
            guard let seq = a[0] else { throw JinjaRuntimeError("\(what) needs an argument") }
            return try JinjaOperators.contains(seq, v)
        case "sameas":
            // Python identity: None, True and False are singletons; small ints are cached; a namespace
            // is itself. Other values are distinct objects.
            let other = try one()
            switch (v, other) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b && (-5...256).contains(a)
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "filter":
            try none()
            if case .string(let s) = v { return hasFilter(s) }
            return false
        case "test":
            try none()
            if case .string(let s) = v { return hasTest(s) }
            return false
        default:
            throw JinjaRuntimeError("unknown test '\(name)'")
        }
    }
}

private extension JinjaValue {
    /// A float result of `%` that is integral compares like the int (3.0 % 2 == 1).
    static func from(_ v: JinjaValue) -> JinjaValue {
        if case .float(let d) = v, d == d.rounded(), abs(d) < 0x1p62 { return .int(Int(d)) }
        return v
    }
}
