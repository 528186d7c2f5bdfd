import XCTest
@testable import DPO

/// Hostile and malformed templates fail with a precise error, never hang, crash or print a wrong prompt.
final class JinjaHardeningTests: XCTestCase {
    private func render(_ source: String, _ context: [String: JinjaValue] = [:], limits: JinjaLimits = JinjaLimits()) throws -> String {
        var t = try ChatTemplate(source: source)
        t.limits = limits
        return try t.render(context: context)
    }

    func testLoopIterationLimit() {
        expectDPOError(["invalid argument", "loop iterations"]) {
            _ = try render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        }
        var small = JinjaLimits()
        small.maxIterations = 10
        expectDPOError(["loop iterations", "1:1"]) { _ = try render("{% for i in range(11) %}{% endfor %}", limits: small) }
        XCTAssertNoThrow(try render("{% for i in range(10) %}{% endfor %}", limits: small))
    }

    /// A loop that grows a string or list by concatenation, or reads a long string, each step under
    /// every other limit: the work adds up quadratically (these ran for minutes); it is bounded.
    func testTotalWorkIsBounded() {
        let grow = "{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ 'x' * 300 %}{% endfor %}{{ ns.s|length }}"
        expectDPOError(["invalid argument", "worked on more than", "in total (limit)"]) { _ = try render(grow) }
        expectDPOError(["worked on more than"]) {
            _ = try render("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i, i, i, i] %}{% endfor %}")
        }
        expectDPOError(["worked on more than"]) {
            _ = try render("{% set s = 'x' * 30000000 %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}")
        }
        var bounded = JinjaLimits()
        bounded.maxWork = 1 << 24
        for body in ["{% set t = s.upper() %}", "{% set t = s[0] %}", "{% set t = s|length %}", "{% set t = s[1:] %}",
                     "{% if s == s %}{% endif %}", "{% if s is string %}{% endif %}"] {
            let source = "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}" + body + "{% endfor %}"
            expectDPOError(["worked on more than \(1 << 24)"]) { _ = try render(source, limits: bounded) }
        }
        expectDPOError(["worked on more than"]) {
            _ = try render("{% set l = range(99999)|list %}{% for i in range(100000) %}{% if -1 in l %}{% endif %}{% endfor %}")
        }
        XCTAssertEqual(try render("{{ ('a' * 10000000 ~ 'b') in ('a' * 20000000) }} {{ ('a' * 1000 ~ 'b') in ('a' * 20000000 ~ 'b') }} {{ 'abab' in 'abacababd' }} {{ 'abab' in 'abacabad' }}"), "False True True False")
        XCTAssertEqual(try render("{{ 'é' in 'café' }} {{ 'fé' in 'café' }} {{ '' in '' }} {{ 'x' in '' }} {{ 'e' in 'café' }} {{ '\u{301}' in 'cafe\u{301}' }}"),
                       "True True True False False True")
        var small = JinjaLimits()
        small.maxWork = 1000
        XCTAssertEqual(try render("{% set ns = namespace(s='') %}{% for i in range(10) %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}{{ ns.s }}", limits: small).count, 10)
        expectDPOError(["worked on more than 1000"]) {
            _ = try render("{% set ns = namespace(s='') %}{% for i in range(100) %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}", limits: small)
        }
    }

    func testOutputAndValueLimits() {
        var small = JinjaLimits()
        small.maxOutputBytes = 100
        expectDPOError(["output is longer than 100 bytes"]) { _ = try render("{% for i in range(200) %}x{% endfor %}", limits: small) }
        XCTAssertEqual(try render("{% for i in range(100) %}x{% endfor %}", limits: small).count, 100)
        expectDPOError(["longer than"]) { _ = try render("{{ 'x' * 1000000000000 }}") }
        expectDPOError(["longer than"]) { _ = try render("{{ [1] * 1000000000000 }}") }
        expectDPOError(["longer than"]) {
            _ = try render("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}")
        }
        expectDPOError(["longer than"]) {
            _ = try render("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
        }
        expectDPOError(["MAX_RANGE"]) { _ = try render("{{ range(1000000)|length }}") }
        expectDPOError(["MAX_RANGE"]) { _ = try render("{{ range(-9223372036854775807, 9223372036854775807, 4611686018427387904)|length }} {{ range(0, 9223372036854775807)|length }}") }
        XCTAssertEqual(try render("{{ range(9223372036854775806, 9223372036854775807, 9223372036854775807)|list }} {{ ''*1000000000000000 }}|{{ []*1000000000000000 }}"), "[9223372036854775806] |[]")
        expectDPOError(["integer overflow"]) { _ = try render("{{ 2 ** 64 }}") }
        expectDPOError(["integer overflow"]) { _ = try render("{{ 9223372036854775807 + 1 }}") }
    }

    func testDeepNestingIsRefused() {
        let parens = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        expectDPOError(["syntax error", "deeper than"]) { _ = try render("{{ \(parens) }}") }
        expectDPOError(["syntax error", "deeper than"]) { _ = try render("{{ 1" + String(repeating: " + 1", count: 100_000) + " }}") }
        expectDPOError(["syntax error", "deeper than"]) { _ = try render("{{ x" + String(repeating: ".a", count: 100_000) + " }}") }
        expectDPOError(["syntax error", "deeper than"]) {
            _ = try render(String(repeating: "{% if true %}", count: 5000) + String(repeating: "{% endif %}", count: 5000))
        }
        expectDPOError(["syntax error", "deeper than"]) { _ = try render("{{ " + String(repeating: "not ", count: 5000) + "1 }}") }
        expectDPOError(["syntax error", "deeper than"]) { _ = try render("{{ " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + " }}") }
        expectDPOError(["syntax error at 1:7", "unexpected '}'"]) { _ = try render("{{ (1 }}") }
        // Values nested by a loop, and a namespace that contains itself.
        expectDPOError(["nested more than"]) {
            _ = try render("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}")
        }
        expectDPOError(["nested more than"]) { _ = try render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}") }
        expectDPOError(["Namespace is not JSON serializable"]) { _ = try render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns|tojson }}") }
        // Deep JSON from the caller is fine up to the JSON parser's own bound.
        let deep = String(repeating: "[", count: 400) + String(repeating: "]", count: 400)
        XCTAssertEqual(try render("{{ x|tojson }}", ["x": JinjaValue(try JSON.parse(deep))]), deep)
    }

    func testErrorsNameTheConstructAndPosition() {
        expectDPOError(["format error", "syntax error at 2:6", "unknown filter 'frobnicate'"]) {
            _ = try ChatTemplate(source: "a\n{{ x|frobnicate }}")
        }
        expectDPOError(["syntax error at 1:13", "unknown test 'odd_ish'"]) { _ = try ChatTemplate(source: "{{ x is not odd_ish }}") }
        expectDPOError(["syntax error at 3:1", "unsupported statement 'macro'"]) {
            _ = try ChatTemplate(source: "x\n\n{% macro m() %}{% endmacro %}")
        }
        expectDPOError(["syntax error at 1:4", "unsupported statement 'raw'"]) { _ = try ChatTemplate(source: "{% raw %}{{ x }}{% endraw %}") }
        expectDPOError(["syntax error at 1:1", "'if' block", "not closed", "'endif'"]) { _ = try ChatTemplate(source: "{% if x %}abc") }
        expectDPOError(["syntax error at 1:3", "'{{' tag is not closed"]) { _ = try ChatTemplate(source: "a {{ x ") }
        expectDPOError(["syntax error at 1:4", "unterminated string"]) { _ = try ChatTemplate(source: "{{ 'abc }}") }
        expectDPOError(["syntax error at 1:1", "missing end of comment"]) { _ = try ChatTemplate(source: "{# abc") }
        expectDPOError(["syntax error", "'break' outside of a loop"]) { _ = try ChatTemplate(source: "{% break %}") }
        XCTAssertEqual(try render("{{ 1 }}}}"), "1}}")
        expectDPOError(["invalid argument", "error at 2:9", "unsupported operand type(s) for +: 'NoneType' and 'str'"]) {
            _ = try render("line\n{{ none + 'a' }}")
        }
        expectDPOError(["error at 1:11", "'missing' is undefined"]) { _ = try render("{{ missing.attr }}") }
        expectDPOError(["error at 1:34", "Object of type Undefined is not JSON serializable"]) { _ = try render("{{ missing is defined or missing|tojson }}") }
        expectDPOError(["unsupported string method 'format'"]) { _ = try render("{{ '{}'.format(1) }}") }
        expectDPOError(["unsupported list method 'append'"]) { _ = try render("{{ [].append(1) }}") }
        expectDPOError(["unsupported dict method 'update'"]) { _ = try render("{{ {}.update({}) }}") }
        expectDPOError(["unsupported printf-style"]) { _ = try render("{{ '%s' % 1 }}") }
        expectDPOError(["cannot print the function 'range'"]) { _ = try render("{{ range }}") }
        expectDPOError(["raised an exception at 1:17", "nope"]) { _ = try render("{% if true %}{{ raise_exception('nope') }}{% endif %}") }
        expectDPOError(["not enough values to unpack"]) { _ = try render("{% for a, b in [[1]] %}{% endfor %}") }
    }

    /// Random edits of real templates: parsing and rendering either succeed or throw a DPOError.
    func testMutatedTemplatesNeverCrash() throws {
        let dir = TestModels.fixturesDirectory() + "/chat_templates/templates/"
        let sources = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map {
            Array(try String(contentsOfFile: dir + $0, encoding: .utf8).unicodeScalars)
        }
        let alphabet = Array("{}%#-+()[]|.,:'\"~ \n\tabcxyz01=<>!*/".unicodeScalars)
        var rng = Xoshiro256(seed: 11)
        var limits = JinjaLimits()
        limits.maxIterations = 10_000
        limits.maxOutputBytes = 100_000
        let messages = JinjaValue.list([
            .dict(JinjaDict([("role", .string("system")), ("content", .string("S"))])),
            .dict(JinjaDict([("role", .string("user")), ("content", .string("U"))])),
        ])
        var rendered = 0
        for i in 0..<600 {
            var s = sources[i % sources.count]
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                guard !s.isEmpty else { break }
                let at = Int(rng.next() % UInt64(s.count))
                switch rng.next() % 3 {
                case 0: s.remove(at: at)
                case 1: s.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                default: s.removeSubrange(at..<min(s.count, at + Int(rng.next() % 40)))
                }
            }
            var text = ""
            text.unicodeScalars.append(contentsOf: s)
            do {
                var t = try ChatTemplate(source: text)
                t.limits = limits
                _ = try t.render(context: ["messages": messages, "add_generation_prompt": .bool(true), "bos_token": .string("<s>")])
                rendered += 1
            } catch is DPOError {
            } catch {
                XCTFail("non-DPOError \(error)")
            }
        }
        XCTAssertGreaterThan(rendered, 50)
    }
}
