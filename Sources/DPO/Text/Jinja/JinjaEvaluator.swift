// The Jinja evaluator: runs a parsed template over a context, with jinja2's scoping (a `set` inside a
// loop body is local to that iteration; `if` blocks share their scope), Python operator semantics and
// the limits that keep a hostile template from hanging or exhausting memory.

/// Bounds on one rendering.
public struct JinjaLimits {
    /// Longest output, in UTF-8 bytes.
    public var maxOutputBytes = 32 << 20
    /// Most loop iterations (all loops together) and items made by `range`, filters and methods.
    public var maxIterations = 250_000
    /// Longest string or list an operation may build (`'a' * n`, `+`, `join`, `replace`, ...).
    public var maxValueLength = 32 << 20
    /// Most work one rendering may do, in bytes of strings and items of lists and dicts: every
    /// value an operation builds counts its size, and every operation, filter, test, string method
    /// or index its operands' sizes. Within the other limits a loop could otherwise grow a string
    /// by concatenation, or search one, 250000 times (terabytes of work: a hang).
    public var maxWork = 1 << 28

    public init() {}

    /// Deepest nesting of values (lists in lists, ...) that printing, comparing and building accept.
    static let maxNesting = 512
    /// jinja2's sandbox refuses ranges longer than this (`MAX_RANGE`).
    static let maxRange = 100_000
}

/// An evaluation error; the evaluator attaches the position of the innermost expression or statement.
struct JinjaRuntimeError: Error {
    let message: String
    var position: JinjaPosition? = nil
    init(_ message: String, position: JinjaPosition? = nil) {
        self.message = message
        self.position = position
    }
}

/// `raise_exception(message)` was called by the template.
struct JinjaRaisedError: Error {
    let message: String
    var position: JinjaPosition? = nil
}

final class JinjaEvaluator {
    let limits: JinjaLimits
    private var output = ""
    private var outputBytes = 0
    private(set) var iterations = 0
    /// Work done so far (see `JinjaLimits.maxWork`).
    private var work = 0
    /// Scopes, innermost last; scopes[0] is the render context (top-level `set` writes there).
    private var scopes: [[String: JinjaValue]]
    private let globals: [String: JinjaValue]
    /// Where the output of each `{% generation %}` block lies in the rendered text, as UTF-8 byte
    /// ranges, in the order the blocks finished: transformers' `generation_indices` (its
    /// AssistantTracker), in bytes where transformers counts characters.
    private(set) var generationSpans: [Range<Int>] = []
    /// For each block whose output is held back while it renders (a generation block, a `set`
    /// block), the length of the top-level output when it started. transformers measures a span's
    /// start as the length of the output its template generator has yielded so far, which excludes
    /// whatever such enclosing blocks are still holding.
    private var heldBack: [Int] = []

    private enum Flow { case normal, breakLoop, continueLoop }

    init(context: [String: JinjaValue], globals: [String: JinjaValue], limits: JinjaLimits) {
        self.scopes = [context]
        self.globals = globals
        self.limits = limits
    }

    /// Renders the template and returns the output.
    func render(_ nodes: [JinjaNode]) throws -> String {
        _ = try execute(nodes)
        return output
    }

    // MARK: Limits

    func countIterations(_ n: Int = 1) throws {
        iterations += n
        if iterations > limits.maxIterations {
            throw JinjaRuntimeError("the template ran more than \(limits.maxIterations) loop iterations (limit)")
        }
    }

    /// Checks the size of a value an operation is about to build, and counts it against the
    /// rendering's total.
    func checkLength(_ n: Int, _ what: String) throws {
        if n > limits.maxValueLength {
            throw JinjaRuntimeError("\(what) would be longer than \(limits.maxValueLength) (limit)")
        }
        try charge(n)
    }

    /// Counts `n` units of work against `JinjaLimits.maxWork`.
    func charge(_ n: Int) throws {
        work += n
        if work > limits.maxWork {
            throw JinjaRuntimeError("the template worked on more than \(limits.maxWork) bytes and items of strings and lists in total (limit)")
        }
    }

    /// Charges the size of each value an operation reads: the bytes of a string, the items of a
    /// list, tuple or dict, 1 for anything else.
    func charge(_ values: JinjaValue...) throws {
        var n = 0
        for v in values {
            switch v {
            case .string(let s): n += s.utf8.count
            case .list(let a), .tuple(let a): n += a.count
            case .dict(let d): n += d.count
            default: n += 1
            }
        }
        try charge(n)
    }

    private func emit(_ s: String) throws {
        outputBytes += s.utf8.count
        if outputBytes > limits.maxOutputBytes {
            throw JinjaRuntimeError("the output is longer than \(limits.maxOutputBytes) bytes (limit)")
        }
        output += s
    }

    // MARK: Statements

    private func execute(_ nodes: [JinjaNode]) throws -> Flow {
        for node in nodes {
            let flow = try execute(node)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func execute(_ node: JinjaNode) throws -> Flow {
        switch node {
        case .text(let s):
            try emit(s)
        case .output(let e):
            let v = try eval(e)
            do { try emit(try v.pythonStr()) } catch var error as JinjaRuntimeError {
                if error.position == nil { error.position = e.position }
                throw error
            }
        case .ifBlock(let branches, let elseBody):
            for (condition, body) in branches where try eval(condition).isTruthy {
                return try execute(body)
            }
            return try execute(elseBody)
        case .forLoop(let loop):
            return try executeFor(loop)
        case .set(let target, let e, let position):
            try assign(target, try eval(e), at: position)
        case .setBlock(let target, let filters, let body, let position):
            heldBack.append(yieldedLength)
            defer { heldBack.removeLast() }
            let saved = output
            output = ""
            let flow = try execute(body)
            var value = JinjaValue.string(output)
            output = saved
            for f in filters { value = try applyFilter(f, to: value) }
            try assign(target, value, at: position)
            return flow
        case .loopControl(let isBreak, _):
            return isBreak ? .breakLoop : .continueLoop
        case .generation(let body):
            let start = output.utf8.count
            heldBack.append(yieldedLength)
            let flow = try execute(body)  // a throw ends the rendering: nothing to restore
            let spanStart = yieldedLength  // before the block's own output, which it still holds
            heldBack.removeLast()
            generationSpans.append(spanStart..<(spanStart + output.utf8.count - start))
            return flow
        }
        return .normal
    }

    /// The length (UTF-8 bytes) of the top-level output, without what enclosing generation and
    /// `set` blocks still hold back.
    private var yieldedLength: Int { heldBack.first ?? output.utf8.count }

    private func executeFor(_ loop: JinjaForLoop) throws -> Flow {
        var items = try withPosition(loop.iterable.position) { try self.iterate(try self.eval(loop.iterable)) }
        if let filter = loop.filter {
            var kept: [JinjaValue] = []
            for item in items {
                try countIterations()
                scopes.append([:])
                defer { scopes.removeLast() }
                try assign(loop.target, item, at: loop.position)
                if try eval(filter).isTruthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty { return try execute(loop.elseBody) }
        let count = items.count
        for (i, item) in items.enumerated() {
            try withPosition(loop.position) { try self.countIterations() }
            var info = JinjaDict()
            info["index"] = .int(i + 1)
            info["index0"] = .int(i)
            info["revindex"] = .int(count - i)
            info["revindex0"] = .int(count - i - 1)
            info["first"] = .bool(i == 0)
            info["last"] = .bool(i == count - 1)
            info["length"] = .int(count)
            info["depth"] = .int(1)
            info["depth0"] = .int(0)
            info["previtem"] = i > 0 ? items[i - 1] : .undefined("loop.previtem")
            info["nextitem"] = i + 1 < count ? items[i + 1] : .undefined("loop.nextitem")
            info["cycle"] = .callable(JinjaCallable(name: "loop.cycle") { args in
                guard !args.positional.isEmpty else { throw JinjaRuntimeError("loop.cycle() needs at least one value") }
                return args.positional[i % args.positional.count]
            })
            scopes.append(["loop": .dict(info)])
            defer { scopes.removeLast() }
            try assign(loop.target, item, at: loop.position)
            if try execute(loop.body) == .breakLoop { break }
        }
        return .normal
    }

    private func assign(_ target: JinjaTarget, _ value: JinjaValue, at position: JinjaPosition) throws {
        switch target {
        case .name(let n):
            scopes[scopes.count - 1][n] = value
        case .namespaceAttribute(let n, let attr):
            guard case .namespace(let ns) = lookup(n) else {
                throw JinjaRuntimeError("cannot assign attribute '\(attr)' on '\(n)', which is not a namespace", position: position)
            }
            ns.attributes[attr] = value
        case .tuple(let targets):
            let values = try withPosition(position) { try self.iterate(value) }
            guard values.count == targets.count else {
                throw JinjaRuntimeError(values.count > targets.count ? "too many values to unpack (expected \(targets.count))"
                                        : "not enough values to unpack (expected \(targets.count), got \(values.count))", position: position)
            }
            for (t, v) in zip(targets, values) { try assign(t, v, at: position) }
        }
    }

    private func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() {
            if let v = scope[name] { return v }
        }
        return globals[name] ?? .undefined(name)
    }

    private func withPosition<T>(_ position: JinjaPosition, _ body: () throws -> T) throws -> T {
        do { return try body() } catch var e as JinjaRuntimeError {
            if e.position == nil { e.position = position }
            throw e
        } catch var e as JinjaRaisedError {
            if e.position == nil { e.position = position }
            throw e
        }
    }

    // MARK: Expressions

    func eval(_ e: JinjaExpr) throws -> JinjaValue {
        try withPosition(e.position) { try self.evalUnpositioned(e) }
    }

    private func evalUnpositioned(_ e: JinjaExpr) throws -> JinjaValue {
        switch e.kind {
        case .literal(let v): return v
        case .name(let n): return lookup(n)
        case .list(let items): return try checkedNesting(.list(items.map(eval)))
        case .tuple(let items): return try checkedNesting(.tuple(items.map(eval)))
        case .dict(let pairs):
            var d = JinjaDict()
            for (k, v) in pairs {
                guard case .string(let key) = try eval(k) else {
                    throw JinjaRuntimeError("unsupported dict key: only string keys are supported")
                }
                d[key] = try eval(v)
            }
            return try checkedNesting(.dict(d))
        case .attribute(let base, let name):
            return try getAttribute(try eval(base), name)
        case .subscript(let base, let index):
            return try getItem(try eval(base), try eval(index))
        case .slice(let base, let start, let stop, let step):
            return try slice(try eval(base), try start.map(eval), try stop.map(eval), try step.map(eval))
        case .call(let callee, let args, let kwargs):
            let f = try eval(callee)
            let arguments = JinjaArguments(try args.map(eval), keywords: try kwargs.map { ($0.0, try eval($0.1)) })
            switch f {
            case .callable(let c): return try c.call(arguments)
            case .undefined(let what): throw JinjaRuntimeError("'\(what)' is undefined (cannot be called)")
            default: throw JinjaRuntimeError("'\(f.typeName)' object is not callable")
            }
        case .filter(let base, let call):
            return try applyFilter(call, to: try eval(base))
        case .test(let base, let name, let negated, let args, let kwargs):
            let subject = try eval(base)
            try charge(subject)
            let arguments = JinjaArguments(try args.map(eval), keywords: try kwargs.map { ($0.0, try eval($0.1)) })
            return .bool(try JinjaBuiltins.test(name, subject, arguments, self) != negated)
        case .negate(let inner):
            switch try eval(inner) {
            case .int(let i):
                guard i != Int.min else { throw JinjaRuntimeError("integer overflow") }
                return .int(-i)
            case .bool(let b): return .int(b ? -1 : 0)
            case .float(let d): return .float(-d)
            case .undefined(let what): throw JinjaRuntimeError("'\(what)' is undefined")
            case let v: throw JinjaRuntimeError("bad operand type for unary -: '\(v.typeName)'")
            }
        case .plus(let inner):
            switch try eval(inner) {
            case .int(let i): return .int(i)
            case .bool(let b): return .int(b ? 1 : 0)
            case .float(let d): return .float(d)
            case .undefined(let what): throw JinjaRuntimeError("'\(what)' is undefined")
            case let v: throw JinjaRuntimeError("bad operand type for unary +: '\(v.typeName)'")
            }
        case .not(let inner):
            return .bool(!(try eval(inner).isTruthy))
        case .binary(let op, let l, let r):
            let (a, b) = (try eval(l), try eval(r))
            try charge(a, b)
            return try JinjaOperators.binary(op, a, b, self)
        case .concat(let items):
            var s = ""
            for item in items {
                s += try eval(item).pythonStr()
                try checkLength(s.utf8.count, "the concatenated string")
            }
            return .string(s)
        case .compare(let first, let ops):
            var left = try eval(first)
            for (op, rightExpr) in ops {
                let right = try eval(rightExpr)
                try charge(left, right)
                if !(try JinjaOperators.compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .and(let l, let r):
            let left = try eval(l)
            return left.isTruthy ? try eval(r) : left
        case .or(let l, let r):
            let left = try eval(l)
            return left.isTruthy ? left : try eval(r)
        case .conditional(let condition, let then, let otherwise):
            if try eval(condition).isTruthy { return try eval(then) }
            return try otherwise.map(eval) ?? .undefined("the else branch of a conditional expression")
        }
    }

    func applyFilter(_ call: JinjaFilterCall, to value: JinjaValue) throws -> JinjaValue {
        try withPosition(call.position) {
            try self.charge(value)
            let arguments = JinjaArguments(try call.args.map(self.eval), keywords: try call.kwargs.map { ($0.0, try self.eval($0.1)) })
            return try JinjaBuiltins.filter(call.name, value, arguments, self)
        }
    }

    /// Refuses values nested deeper than `JinjaLimits.maxNesting` (printing, comparing and releasing
    /// them recurses that deep).
    func checkedNesting(_ v: JinjaValue) throws -> JinjaValue {
        func depth(_ v: JinjaValue, _ level: Int) throws {
            if level > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
            switch v {
            case .list(let a), .tuple(let a): for x in a { try depth(x, level + 1) }
            case .dict(let d): for x in d.values { try depth(x, level + 1) }
            case .namespace(let ns): for x in ns.attributes.values { try depth(x, level + 1) }
            default: break
            }
        }
        try depth(v, 0)
        return v
    }

    // MARK: Python object protocol

    /// What `for` and the filters iterate: list items, dict keys, string characters; undefined is empty.
    func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        try charge(v)
        switch v {
        case .list(let a), .tuple(let a): return a
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw JinjaRuntimeError("'\(v.typeName)' object is not iterable")
        }
    }

    /// `x.name` (jinja2's `getattr`: the Python attribute first, then the item).
    func getAttribute(_ base: JinjaValue, _ name: String) throws -> JinjaValue {
        switch base {
        case .undefined(let what):
            throw JinjaRuntimeError("'\(what)' is undefined (cannot read its attribute '\(name)')")
        case .dict(let d):
            if let method = try JinjaMethods.dictMethod(d, name, self) { return method }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .string(let s):
            try charge(base)
            if let method = try JinjaMethods.stringMethod(s, name, self) { return method }
            return .undefined("'str object' has no attribute '\(name)'")
        case .list, .tuple:
            try JinjaMethods.refuseListMethod(name)
            return .undefined("'\(base.typeName) object' has no attribute '\(name)'")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        default:
            return .undefined("'\(base.typeName) object' has no attribute '\(name)'")
        }
    }

    /// `x[key]` (jinja2's `getitem`: the item first, then, for a string key, the attribute).
    func getItem(_ base: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        switch (base, key) {
        case (.undefined(let what), _):
            throw JinjaRuntimeError("'\(what)' is undefined (cannot index it)")
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
        case (.list(let a), _), (.tuple(let a), _):
            if let i = Self.index(key, count: a.count) { return a[i] }
            if key.numeric != nil { return .undefined("index out of range") }
        case (.string(let s), _):
            try charge(base)
            let scalars = Array(s.unicodeScalars)
            if let i = Self.index(key, count: scalars.count) { return .string(String(scalars[i])) }
            if key.numeric != nil { return .undefined("string index out of range") }
        default:
            break
        }
        if case .string(let name) = key { return try getAttribute(base, name) }
        return .undefined("'\(base.typeName) object' has no item \((try? key.pythonRepr()) ?? "")")
    }

    /// A Python index (ints and bools; negative counts from the end) inside 0..<count, or nil.
    private static func index(_ key: JinjaValue, count: Int) -> Int? {
        let i: Int
        switch key {
        case .int(let v): i = v
        case .bool(let b): i = b ? 1 : 0
        default: return nil
        }
        let resolved = i < 0 ? count + i : i
        return resolved >= 0 && resolved < count ? resolved : nil
    }

    /// `x[start:stop:step]` with Python's index adjustment.
    func slice(_ base: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        try charge(base)
        func int(_ v: JinjaValue?) throws -> Int? {
            guard let v, !v.isNone else { return nil }
            switch v {
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            default: throw JinjaRuntimeError("slice indices must be integers or None")
            }
        }
        let stepValue = try int(step) ?? 1
        guard stepValue != 0 else { throw JinjaRuntimeError("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            func adjust(_ v: Int?, _ defaultValue: Int) -> Int {
                guard var i = v else { return defaultValue }
                if i < 0 { i += count; if i < 0 { i = stepValue < 0 ? -1 : 0 } } else if i >= count { i = stepValue < 0 ? count - 1 : count }
                return i
            }
            let lo = adjust(try int(start), stepValue < 0 ? count - 1 : 0)
            let hi = adjust(try int(stop), stepValue < 0 ? -1 : count)
            var out: [Int] = []
            var i = lo
            while stepValue > 0 ? i < hi : i > hi {
                out.append(i)
                let (next, overflow) = i.addingReportingOverflow(stepValue)
                if overflow { break }
                i = next
            }
            return out
        }
        switch base {
        case .list(let a): return .list(try indices(a.count).map { a[$0] })
        case .tuple(let a): return .tuple(try indices(a.count).map { a[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            var out = ""
            out.unicodeScalars.append(contentsOf: try indices(scalars.count).map { scalars[$0] })
            return .string(out)
        case .undefined(let what): throw JinjaRuntimeError("'\(what)' is undefined (cannot slice it)")
        default: return .undefined("'\(base.typeName) object' cannot be sliced")
        }
    }
}
