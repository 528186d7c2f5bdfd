import XCTest
@testable import DPO

final class ChatTemplateAPITests: XCTestCase {
    func testMessagesFromJSONMatchTransformersNormalization() throws {
        let root = try ChatTemplateFixtures.load()
        let cases = try XCTUnwrap(root["normalization_cases"]?.array)
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let o = try XCTUnwrap(c.object)
            let t = try ChatTemplate(source: try XCTUnwrap(o["template"]?.string))
            let messages = try ChatTemplate.messages(json: try XCTUnwrap(o["messages"]))
            let out = try t.render(messages: [], addGenerationPrompt: true, bosToken: "<s>", extra: ["messages": messages])
            XCTAssertEqual(out, o["output"]?.string)
        }
        expectDPOError(["must be a JSON array"]) { _ = try ChatTemplate.messages(json: .object([:])) }
        expectDPOError(["message 1 is not a JSON object"]) { _ = try ChatTemplate.messages(json: .array([.object([:]), .string("x")])) }
    }

    func testSpecialTokensAndDefaults() throws {
        let t = try ChatTemplate(source: "[{{ bos_token }}][{{ eos_token }}][{{ add_generation_prompt }}][{{ tools }}][{{ x }}]")
        XCTAssertEqual(try t.render(messages: []), "[][][False][None][]")
        XCTAssertEqual(try t.render(messages: [], addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>", extra: ["x": .int(3)]),
                       "[<s>][</s>][True][None][3]")
        XCTAssertEqual(try t.render(context: [:]), "[][][][][]")
    }

    func testJSONValuesBecomePythonValues() throws {
        let json = try JSON.parse(#"{"i": 3, "f": 1.5, "whole": 2.0, "big": 1e300, "n": null, "b": true, "s": "é", "a": [1, {"k": "v"}]}"#)
        let t = try ChatTemplate(source: "{{ v }} {{ v.whole is integer }} {{ v|tojson }}")
        XCTAssertEqual(try t.render(context: ["v": JinjaValue(json)]),
                       "{'i': 3, 'f': 1.5, 'whole': 2, 'big': 1e+300, 'n': None, 'b': True, 's': 'é', 'a': [1, {'k': 'v'}]} True "
                       + #"{"i": 3, "f": 1.5, "whole": 2, "big": 1e+300, "n": null, "b": true, "s": "é", "a": [1, {"k": "v"}]}"#)
    }

    func testStrftimeNowClock() throws {
        var t = try ChatTemplate(source: "{{ strftime_now('%Y-%m-%d %a %j') }}")
        t.clock = { JinjaDateTime(year: 2024, month: 2, day: 29) }
        XCTAssertEqual(try t.render(context: [:]), "2024-02-29 Thu 060")
        t.clock = { JinjaDateTime(year: 2000, month: 1, day: 1) }
        XCTAssertEqual(try t.render(context: [:]), "2000-01-01 Sat 001")
        t.clock = { JinjaDateTime(year: 2000, month: 13, day: 1) }
        expectDPOError(["invalid date"]) { _ = try t.render(context: [:]) }
        // The default clock is the real one.
        let now = JinjaDateTime.now()
        let year = try ChatTemplate(source: "{{ strftime_now('%Y') }}").render(context: [:])
        XCTAssertTrue(year == String(now.year) || year == String(now.year + 1))
    }

    func testPythonFloatRepr() {
        let cases: [(Double, String)] = [
            (0.1, "0.1"), (1e16, "1e+16"), (1e15, "1000000000000000.0"), (1e-4, "0.0001"), (1e-5, "1e-05"),
            (-0.0, "-0.0"), (123456789.125, "123456789.125"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
            (.infinity, "inf"), (-.infinity, "-inf"), (.nan, "nan"), (2.5e-7, "2.5e-07"), (9999999999999998.0, "9999999999999998.0"),
        ]
        for (d, expected) in cases { XCTAssertEqual(pythonFloatRepr(d), expected, "\(d)") }
    }
}
