// The Jinja parser: tokens to a syntax tree, with jinja2's grammar and operator precedence
// (jinja2/parser.py), lowest first: `x if c else y`, `or`, `and`, `not`, comparisons and `in`,
// `+ -`, `~`, `* / // %`, `**`, unary `- +`, then filters `|f`, tests `is t`, calls, `.attr`, `[i]`.
// Statements: for (with `if` filter and `else`), if/elif/else, set (also `ns.attr`, tuples and block
// set), break/continue and transformers' `generation` block. Anything else is refused by name.

/// An expression node.
final class JinjaExpr {
    enum Kind {
        case literal(JinjaValue)
        case name(String)
        case list([JinjaExpr])
        case tuple([JinjaExpr])
        case dict([(JinjaExpr, JinjaExpr)])
        /// `x.name`: attribute first, then item (jinja2's `getattr`).
        case attribute(JinjaExpr, String)
        /// `x[i]` / `x.0`: item first, then attribute (jinja2's `getitem`).
        case `subscript`(JinjaExpr, JinjaExpr)
        case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
        case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
        case filter(JinjaExpr, JinjaFilterCall)
        case test(JinjaExpr, name: String, negated: Bool, [JinjaExpr], [(String, JinjaExpr)])
        case negate(JinjaExpr)
        case plus(JinjaExpr)
        case not(JinjaExpr)
        /// `+ - * / // % **`
        case binary(String, JinjaExpr, JinjaExpr)
        /// `a ~ b ~ c`
        case concat([JinjaExpr])
        /// `a < b <= c`, `in`, `not in` (chained like Python).
        case compare(JinjaExpr, [(String, JinjaExpr)])
        case and(JinjaExpr, JinjaExpr)
        case or(JinjaExpr, JinjaExpr)
        /// `then if condition else otherwise` (no `else`: undefined).
        case conditional(condition: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    }

    let kind: Kind
    let position: JinjaPosition
    /// Height of this subtree: evaluation recurses this deep, so the parser bounds it.
    let height: Int

    init(_ kind: Kind, _ position: JinjaPosition) {
        self.kind = kind
        self.position = position
        self.height = 1 + Self.children(kind).reduce(0) { max($0, $1.height) }
    }

    private static func children(_ kind: Kind) -> [JinjaExpr] {
        switch kind {
        case .literal, .name: return []
        case .list(let a), .tuple(let a), .concat(let a): return a
        case .dict(let pairs): return pairs.flatMap { [$0.0, $0.1] }
        case .attribute(let e, _), .negate(let e), .plus(let e), .not(let e): return [e]
        case .subscript(let a, let b), .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): return [a, b]
        case .slice(let e, let a, let b, let c): return [e] + [a, b, c].compactMap { $0 }
        case .call(let f, let args, let kwargs): return [f] + args + kwargs.map { $0.1 }
        case .filter(let e, let call): return [e] + call.args + call.kwargs.map { $0.1 }
        case .test(let e, _, _, let args, let kwargs): return [e] + args + kwargs.map { $0.1 }
        case .compare(let e, let ops): return [e] + ops.map { $0.1 }
        case .conditional(let c, let t, let o): return [c, t] + (o.map { [$0] } ?? [])
        }
    }
}

/// `|name(args)` applied to a value.
struct JinjaFilterCall {
    let name: String
    let args: [JinjaExpr]
    let kwargs: [(String, JinjaExpr)]
    let position: JinjaPosition
}

/// The left side of `set` and the variables of `for`.
indirect enum JinjaTarget {
    case name(String)
    case namespaceAttribute(String, String)
    case tuple([JinjaTarget])
}

struct JinjaForLoop {
    let target: JinjaTarget
    let iterable: JinjaExpr
    let filter: JinjaExpr?
    let body: [JinjaNode]
    let elseBody: [JinjaNode]
    let position: JinjaPosition
}

/// A statement node.
enum JinjaNode {
    case text(String)
    case output(JinjaExpr)
    case ifBlock([(JinjaExpr, [JinjaNode])], elseBody: [JinjaNode])
    case forLoop(JinjaForLoop)
    case set(JinjaTarget, JinjaExpr, JinjaPosition)
    case setBlock(JinjaTarget, [JinjaFilterCall], [JinjaNode], JinjaPosition)
    case loopControl(isBreak: Bool, JinjaPosition)
    case generation([JinjaNode])
}

/// Names of filters and tests the evaluator implements; the parser refuses others up front, as
/// jinja2 does when it compiles a template.
protocol JinjaNameRegistry {
    static func hasFilter(_ name: String) -> Bool
    static func hasTest(_ name: String) -> Bool
}

struct JinjaParser {
    /// Deepest expression/statement nesting accepted (a hostile template cannot exhaust the stack).
    static let maxDepth = 100

    private let tokens: [JinjaToken]
    private var index = 0
    private var depth = 0
    private var loopDepth = 0

    init(tokens: [JinjaToken]) { self.tokens = tokens }

    private var current: JinjaToken { tokens[min(index, tokens.count - 1)] }
    private var peekNext: JinjaToken { tokens[min(index + 1, tokens.count - 1)] }

    private mutating func advance() -> JinjaToken {
        let t = current
        if index < tokens.count - 1 { index += 1 }
        return t
    }

    private func fail(_ message: String, _ token: JinjaToken? = nil) -> JinjaSyntaxError {
        JinjaSyntaxError(message: message, position: (token ?? current).position)
    }

    private func describe(_ t: JinjaToken) -> String {
        switch t.kind {
        case .text: return "template text"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "end of print statement '}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block '%}'"
        case .name(let n): return "'\(n)'"
        case .string: return "string literal"
        case .integer(let i): return "'\(i)'"
        case .float(let d): return "'\(d)'"
        case .op(let o): return "'\(o)'"
        case .end: return "end of template"
        }
    }

    private func isOp(_ op: String) -> Bool {
        if case .op(let o) = current.kind { return o == op }
        return false
    }

    private func isName(_ name: String) -> Bool {
        if case .name(let n) = current.kind { return n == name }
        return false
    }

    private mutating func skipOp(_ op: String) -> Bool {
        if isOp(op) { _ = advance(); return true }
        return false
    }

    private mutating func skipName(_ name: String) -> Bool {
        if isName(name) { _ = advance(); return true }
        return false
    }

    private mutating func expectOp(_ op: String) throws {
        guard skipOp(op) else { throw fail("expected '\(op)', got \(describe(current))") }
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else { throw fail("expected a name, got \(describe(current))") }
        _ = advance()
        return n
    }

    private mutating func expectBlockEnd() throws {
        guard case .blockEnd = current.kind else { throw fail("expected end of statement block '%}', got \(describe(current))") }
        _ = advance()
    }

    /// Makes an expression node, refusing trees taller than `maxDepth` (evaluating and releasing a
    /// tree recurses along its height).
    private func node(_ kind: JinjaExpr.Kind, _ position: JinjaPosition) throws -> JinjaExpr {
        let e = JinjaExpr(kind, position)
        if e.height > Self.maxDepth { throw JinjaSyntaxError(message: "the expression nests deeper than \(Self.maxDepth) levels", position: position) }
        return e
    }

    private mutating func enter() throws {
        depth += 1
        if depth > Self.maxDepth { throw fail("the template nests deeper than \(Self.maxDepth) levels") }
    }

    // MARK: Statements

    /// Parses the whole template.
    mutating func parseTemplate<R: JinjaNameRegistry>(_ registry: R.Type) throws -> [JinjaNode] {
        let (nodes, _, _) = try parseBody(registry, until: [], opener: nil)
        return nodes
    }

    /// Parses nodes until one of the `until` tags; returns the nodes, the tag met and its `{%` token.
    private mutating func parseBody<R: JinjaNameRegistry>(_ r: R.Type, until: Set<String>, opener: (String, JinjaToken)?)
        throws -> ([JinjaNode], String, JinjaToken?) {
        var nodes: [JinjaNode] = []
        while true {
            let token = current
            switch token.kind {
            case .end:
                if let (name, openerToken) = opener {
                    let wanted = until.sorted().map { "'\($0)'" }.joined(separator: " or ")
                    throw fail("unexpected end of template: the '\(name)' block opened here is not closed (expected \(wanted))", openerToken)
                }
                return (nodes, "", nil)
            case .text(let s):
                _ = advance()
                nodes.append(.text(s))
            case .variableBegin:
                _ = advance()
                let expr = try parseTuple(r, withCondition: true)
                guard case .variableEnd = current.kind else { throw fail("expected end of print statement '}}', got \(describe(current))") }
                _ = advance()
                nodes.append(.output(expr))
            case .blockBegin:
                guard case .name(let name) = peekNext.kind else {
                    throw fail("expected a statement name after '{%', got \(describe(peekNext))", peekNext)
                }
                if until.contains(name) {
                    _ = advance(); _ = advance()
                    return (nodes, name, token)
                }
                _ = advance(); _ = advance()
                nodes.append(try parseStatement(r, name, begin: token))
            default:
                throw fail("unexpected \(describe(token))")
            }
        }
    }

    private static let unsupportedStatements: Set<String> = [
        "macro", "call", "filter", "with", "block", "extends", "include", "import", "from", "autoescape",
        "do", "trans", "pluralize", "endmacro", "endcall", "endfilter", "endwith", "endblock", "raw",
    ]

    private mutating func parseStatement<R: JinjaNameRegistry>(_ r: R.Type, _ name: String, begin: JinjaToken) throws -> JinjaNode {
        try enter()
        defer { depth -= 1 }
        switch name {
        case "for": return try parseFor(r, begin: begin)
        case "if": return try parseIf(r, begin: begin)
        case "set": return try parseSet(r, begin: begin)
        case "break", "continue":
            guard loopDepth > 0 else { throw fail("'\(name)' outside of a loop", begin) }
            try expectBlockEnd()
            return .loopControl(isBreak: name == "break", begin.position)
        case "generation":
            try expectBlockEnd()
            let (body, _, _) = try parseBody(r, until: ["endgeneration"], opener: ("generation", begin))
            try expectBlockEnd()
            return .generation(body)
        default:
            if Self.unsupportedStatements.contains(name) {
                throw fail("unsupported statement '\(name)'", begin)
            }
            if ["endfor", "endif", "endset", "elif", "else", "endgeneration"].contains(name) {
                throw fail("unexpected '\(name)' (no open block to end)", begin)
            }
            throw fail("unknown statement '\(name)'", begin)
        }
    }

    private mutating func parseFor<R: JinjaNameRegistry>(_ r: R.Type, begin: JinjaToken) throws -> JinjaNode {
        let target = try parseAssignTarget(r, allowNamespace: false, endNames: ["in"])
        guard skipName("in") else { throw fail("expected 'in' in the for statement, got \(describe(current))") }
        let iterable = try parseTuple(r, withCondition: false, endNames: ["recursive", "if"])
        var filter: JinjaExpr? = nil
        if skipName("if") { filter = try parseExpression(r, withCondition: true) }
        if isName("recursive") { throw fail("unsupported recursive for loop") }
        try expectBlockEnd()
        loopDepth += 1
        let (body, endTag, _) = try parseBody(r, until: ["endfor", "else"], opener: ("for", begin))
        loopDepth -= 1
        var elseBody: [JinjaNode] = []
        if endTag == "else" {
            try expectBlockEnd()
            (elseBody, _, _) = try parseBody(r, until: ["endfor"], opener: ("for", begin))
        }
        try expectBlockEnd()
        return .forLoop(JinjaForLoop(target: target, iterable: iterable, filter: filter, body: body,
                                     elseBody: elseBody, position: begin.position))
    }

    private mutating func parseIf<R: JinjaNameRegistry>(_ r: R.Type, begin: JinjaToken) throws -> JinjaNode {
        var branches: [(JinjaExpr, [JinjaNode])] = []
        var condition = try parseTuple(r, withCondition: false)
        while true {
            try expectBlockEnd()
            let (body, endTag, _) = try parseBody(r, until: ["elif", "else", "endif"], opener: ("if", begin))
            branches.append((condition, body))
            switch endTag {
            case "elif":
                condition = try parseTuple(r, withCondition: false)
            case "else":
                try expectBlockEnd()
                let (elseBody, _, _) = try parseBody(r, until: ["endif"], opener: ("if", begin))
                try expectBlockEnd()
                return .ifBlock(branches, elseBody: elseBody)
            default:
                try expectBlockEnd()
                return .ifBlock(branches, elseBody: [])
            }
        }
    }

    private mutating func parseSet<R: JinjaNameRegistry>(_ r: R.Type, begin: JinjaToken) throws -> JinjaNode {
        let target = try parseAssignTarget(r, allowNamespace: true, endNames: [])
        if skipOp("=") {
            let value = try parseTuple(r, withCondition: true)
            try expectBlockEnd()
            return .set(target, value, begin.position)
        }
        var filters: [JinjaFilterCall] = []
        while skipOp("|") { filters.append(try parseFilterCall(r)) }
        try expectBlockEnd()
        let (body, _, _) = try parseBody(r, until: ["endset"], opener: ("set", begin))
        try expectBlockEnd()
        return .setBlock(target, filters, body, begin.position)
    }

    /// `name`, `ns.attr` (set only), or names separated by commas, optionally in parentheses.
    private mutating func parseAssignTarget<R: JinjaNameRegistry>(_ r: R.Type, allowNamespace: Bool, endNames: Set<String>) throws -> JinjaTarget {
        if allowNamespace, case .name(let n) = current.kind, case .op(".") = peekNext.kind {
            _ = advance(); _ = advance()
            return .namespaceAttribute(n, try expectName())
        }
        var targets: [JinjaTarget] = []
        repeat {
            if case .name(let n) = current.kind, endNames.contains(n) { break }
            if skipOp("(") {
                var inner: [JinjaTarget] = []
                repeat {
                    if isOp(")") { break }
                    inner.append(.name(try expectName()))
                } while skipOp(",")
                try expectOp(")")
                targets.append(.tuple(inner))
            } else {
                let token = current
                let n = try expectName()
                if ["true", "false", "none", "True", "False", "None"].contains(n) { throw fail("cannot assign to '\(n)'", token) }
                targets.append(.name(n))
            }
        } while skipOp(",")
        guard !targets.isEmpty else { throw fail("expected an assignment target, got \(describe(current))") }
        return targets.count == 1 ? targets[0] : .tuple(targets)
    }

    // MARK: Expressions

    /// An expression, or several separated by commas (a tuple), up to the end of the tag.
    private mutating func parseTuple<R: JinjaNameRegistry>(_ r: R.Type, withCondition: Bool, endNames: Set<String> = [],
                                                           explicitParentheses: Bool = false) throws -> JinjaExpr {
        let start = current
        var items: [JinjaExpr] = []
        var sawComma = false
        while true {
            if !items.isEmpty {
                guard skipOp(",") else { break }
                sawComma = true
            }
            if isTupleEnd(endNames) { break }
            items.append(try parseExpression(r, withCondition: withCondition))
        }
        if !sawComma {
            if let only = items.first { return only }
            if !explicitParentheses { throw fail("expected an expression, got \(describe(current))") }
        }
        return try node(.tuple(items), start.position)
    }

    private func isTupleEnd(_ endNames: Set<String>) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .end: return true
        case .op(let o): return o == ")"
        case .name(let n): return endNames.contains(n)
        default: return false
        }
    }

    private mutating func parseExpression<R: JinjaNameRegistry>(_ r: R.Type, withCondition: Bool) throws -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        var expr = try parseOr(r)
        guard withCondition else { return expr }
        while isName("if") {
            let token = advance()
            let condition = try parseOr(r)
            var otherwise: JinjaExpr? = nil
            if skipName("else") { otherwise = try parseExpression(r, withCondition: true) }
            expr = try node(.conditional(condition: condition, then: expr, otherwise: otherwise), token.position)
        }
        return expr
    }

    private mutating func parseOr<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        var left = try parseAnd(r)
        while isName("or") {
            let token = advance()
            left = try node(.or(left, try parseAnd(r)), token.position)
        }
        return left
    }

    private mutating func parseAnd<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        var left = try parseNot(r)
        while isName("and") {
            let token = advance()
            left = try node(.and(left, try parseNot(r)), token.position)
        }
        return left
    }

    private mutating func parseNot<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        if isName("not") {
            let token = advance()
            try enter()
            defer { depth -= 1 }
            return try node(.not(try parseNot(r)), token.position)
        }
        return try parseCompare(r)
    }

    private mutating func parseCompare<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        let start = current
        let first = try parseMath1(r)
        var ops: [(String, JinjaExpr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                _ = advance()
                ops.append((o, try parseMath1(r)))
            } else if isName("in") {
                _ = advance()
                ops.append(("in", try parseMath1(r)))
            } else if isName("not"), case .name("in") = peekNext.kind {
                _ = advance(); _ = advance()
                ops.append(("not in", try parseMath1(r)))
            } else {
                break
            }
        }
        return ops.isEmpty ? first : try node(.compare(first, ops), start.position)
    }

    private mutating func parseMath1<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        var left = try parseConcat(r)
        while case .op(let o) = current.kind, o == "+" || o == "-" {
            let token = advance()
            left = try node(.binary(o, left, try parseConcat(r)), token.position)
        }
        return left
    }

    private mutating func parseConcat<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        let start = current
        var items = [try parseMath2(r)]
        while skipOp("~") { items.append(try parseMath2(r)) }
        return items.count == 1 ? items[0] : try node(.concat(items), start.position)
    }

    private mutating func parseMath2<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        var left = try parsePow(r)
        while case .op(let o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            let token = advance()
            left = try node(.binary(o, left, try parsePow(r)), token.position)
        }
        return left
    }

    private mutating func parsePow<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        var left = try parseUnary(r, withFilter: true)
        while isOp("**") {
            let token = advance()
            left = try node(.binary("**", left, try parseUnary(r, withFilter: true)), token.position)
        }
        return left
    }

    private mutating func parseUnary<R: JinjaNameRegistry>(_ r: R.Type, withFilter: Bool) throws -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        let token = current
        var result: JinjaExpr
        if skipOp("-") {
            result = try node(.negate(try parseUnary(r, withFilter: false)), token.position)
        } else if skipOp("+") {
            result = try node(.plus(try parseUnary(r, withFilter: false)), token.position)
        } else {
            result = try parsePrimary(r)
        }
        result = try parsePostfix(r, result)
        if withFilter { result = try parseFilterExpression(r, result) }
        return result
    }

    private mutating func parsePrimary<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaExpr {
        let token = current
        switch token.kind {
        case .name(let n):
            _ = advance()
            switch n {
            case "true", "True": return try node(.literal(.bool(true)), token.position)
            case "false", "False": return try node(.literal(.bool(false)), token.position)
            case "none", "None": return try node(.literal(.none), token.position)
            default: return try node(.name(n), token.position)
            }
        case .string(let s):
            _ = advance()
            var text = s
            while case .string(let more) = current.kind { text += more; _ = advance() }
            return try node(.literal(.string(text)), token.position)
        case .integer(let i):
            _ = advance()
            return try node(.literal(.int(i)), token.position)
        case .float(let d):
            _ = advance()
            return try node(.literal(.float(d)), token.position)
        case .op("("):
            _ = advance()
            let inner = try parseTuple(r, withCondition: true, explicitParentheses: true)
            try expectOp(")")
            return inner
        case .op("["):
            _ = advance()
            var items: [JinjaExpr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(","); if isOp("]") { break } }
                items.append(try parseExpression(r, withCondition: true))
            }
            try expectOp("]")
            return try node(.list(items), token.position)
        case .op("{"):
            _ = advance()
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !isOp("}") {
                if !pairs.isEmpty { try expectOp(","); if isOp("}") { break } }
                let key = try parseExpression(r, withCondition: true)
                try expectOp(":")
                pairs.append((key, try parseExpression(r, withCondition: true)))
            }
            try expectOp("}")
            return try node(.dict(pairs), token.position)
        default:
            throw fail("unexpected \(describe(token))")
        }
    }

    private mutating func parsePostfix<R: JinjaNameRegistry>(_ r: R.Type, _ start: JinjaExpr) throws -> JinjaExpr {
        var result = start
        while true {
            let token = current
            if skipOp(".") {
                let attr = current
                switch attr.kind {
                case .name(let n): _ = advance(); result = try node(.attribute(result, n), token.position)
                case .integer(let i): _ = advance(); result = try node(.subscript(result, try node(.literal(.int(i)), attr.position)), token.position)
                default: throw fail("expected a name or number after '.', got \(describe(attr))")
                }
            } else if skipOp("[") {
                var args: [JinjaExpr] = []
                while !isOp("]") {
                    if !args.isEmpty { try expectOp(",") }
                    args.append(try parseSubscribed(r, result))
                }
                try expectOp("]")
                if args.count == 1, case .slice = args[0].kind {
                    result = args[0]
                } else if args.count == 1 {
                    result = try node(.subscript(result, args[0]), token.position)
                } else {
                    result = try node(.subscript(result, try node(.tuple(args), token.position)), token.position)
                }
            } else if isOp("(") {
                result = try parseCall(r, result)
            } else {
                return result
            }
        }
    }

    /// One subscript: an expression or a slice `a:b:c` (each part optional).
    private mutating func parseSubscribed<R: JinjaNameRegistry>(_ r: R.Type, _ base: JinjaExpr) throws -> JinjaExpr {
        let token = current
        var start: JinjaExpr? = nil
        if !isOp(":") {
            let e = try parseExpression(r, withCondition: true)
            if !isOp(":") { return e }
            start = e
        }
        _ = advance()  // ':'
        var stop: JinjaExpr? = nil
        var step: JinjaExpr? = nil
        if !isOp("]") && !isOp(",") && !isOp(":") { stop = try parseExpression(r, withCondition: true) }
        if skipOp(":") {
            if !isOp("]") && !isOp(",") { step = try parseExpression(r, withCondition: true) }
        }
        return try node(.slice(base, start, stop, step), token.position)
    }

    private mutating func parseCallArguments<R: JinjaNameRegistry>(_ r: R.Type) throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expectOp("(")
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while !isOp(")") {
            if !args.isEmpty || !kwargs.isEmpty { try expectOp(","); if isOp(")") { break } }
            if isOp("*") || isOp("**") { throw fail("unsupported *args / **kwargs in a call") }
            if case .name(let n) = current.kind, case .op("=") = peekNext.kind {
                _ = advance(); _ = advance()
                kwargs.append((n, try parseExpression(r, withCondition: true)))
            } else {
                if !kwargs.isEmpty { throw fail("positional argument after keyword argument") }
                args.append(try parseExpression(r, withCondition: true))
            }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    private mutating func parseCall<R: JinjaNameRegistry>(_ r: R.Type, _ callee: JinjaExpr) throws -> JinjaExpr {
        let (args, kwargs) = try parseCallArguments(r)
        return try node(.call(callee, args, kwargs), callee.position)
    }

    private mutating func parseFilterCall<R: JinjaNameRegistry>(_ r: R.Type) throws -> JinjaFilterCall {
        let token = current
        var name = try expectName()
        while skipOp(".") { name += "." + (try expectName()) }
        guard R.hasFilter(name) else { throw fail("unknown filter '\(name)'", token) }
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        if isOp("(") { (args, kwargs) = try parseCallArguments(r) }
        return JinjaFilterCall(name: name, args: args, kwargs: kwargs, position: token.position)
    }

    private mutating func parseFilterExpression<R: JinjaNameRegistry>(_ r: R.Type, _ start: JinjaExpr) throws -> JinjaExpr {
        var result = start
        while true {
            if isOp("|") {
                while skipOp("|") {
                    let call = try parseFilterCall(r)
                    result = try node(.filter(result, call), call.position)
                }
            } else if isName("is") {
                result = try parseTest(r, result)
            } else if isOp("(") {
                result = try parseCall(r, result)
            } else {
                return result
            }
        }
    }

    private mutating func parseTest<R: JinjaNameRegistry>(_ r: R.Type, _ subject: JinjaExpr) throws -> JinjaExpr {
        _ = advance()  // 'is'
        let negated = skipName("not")
        let token = current
        var name = try expectName()
        while skipOp(".") { name += "." + (try expectName()) }
        guard R.hasTest(name) else { throw fail("unknown test '\(name)'", token) }
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        if isOp("(") {
            (args, kwargs) = try parseCallArguments(r)
        } else {
            // A single argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
            let startsArgument: Bool
            switch current.kind {
            case .name(let n): startsArgument = !["else", "or", "and", "is"].contains(n)
            case .string, .integer, .float: startsArgument = true
            case .op(let o): startsArgument = o == "[" || o == "{"
            default: startsArgument = false
            }
            if startsArgument {
                args = [try parsePostfix(r, try parsePrimary(r))]
            }
        }
        return try node(.test(subject, name: name, negated: negated, args, kwargs), token.position)
    }
}
