import XCTest
@testable import DPO

/// The golden renderings of Fixtures/chat_templates/cases.json (tools/make_chat_template_fixtures.py):
/// real model templates rendered by transformers' `apply_chat_template` code, and one micro-template
/// per supported Jinja construct rendered by transformers' jinja2 environment.
enum ChatTemplateFixtures {
    static let fixedNow = JinjaDateTime(year: 2025, month: 3, day: 7, hour: 14, minute: 5, second: 9)

    static func load() throws -> JSONObject {
        let path = TestModels.fixturesDirectory() + "/chat_templates/cases.json"
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        guard case .object(let root) = try JSON.parse(bytes) else { throw DPOError.format("cases.json is not an object") }
        return root
    }

    static func context(_ json: JSONValue?) -> [String: JinjaValue] {
        guard case .object(let o)? = json else { return [:] }
        var out: [String: JinjaValue] = [:]
        for key in o.keys { out[key] = JinjaValue(o[key] ?? .null) }
        return out
    }

    static func words(_ json: JSONValue?) -> [String] {
        (json?.array ?? []).compactMap { $0.string }
    }
}

final class ChatTemplateFixtureTests: XCTestCase {
    func testModelTemplatesMatchTransformers() throws {
        let root = try ChatTemplateFixtures.load()
        let cases = try XCTUnwrap(root["model_cases"]?.array)
        XCTAssertGreaterThan(cases.count, 150)
        var templates: [String: ChatTemplate] = [:]
        var seenTemplates = Set<String>()
        var rendered = 0, refused = 0
        for c in cases {
            let o = try XCTUnwrap(c.object)
            let name = try XCTUnwrap(o["template"]?.string)
            let caseName = "\(name)/\(o["case"]?.string ?? "?")/agp=\(o["add_generation_prompt"]?.bool ?? false)"
            seenTemplates.insert(name)
            if templates[name] == nil {
                let path = TestModels.fixturesDirectory() + "/chat_templates/templates/\(name).jinja"
                var t = try ChatTemplate(source: String(contentsOfFile: path, encoding: .utf8))
                t.clock = { ChatTemplateFixtures.fixedNow }
                templates[name] = t
            }
            let template = try XCTUnwrap(templates[name])
            let messagesJSON = try XCTUnwrap(o["messages"])
            let agp = o["add_generation_prompt"]?.bool ?? false
            let bos = o["bos_token"]?.string, eos = o["eos_token"]?.string
            var extra = ChatTemplateFixtures.context(o["extra"])
            if let tools = o["tools"], !tools.isNull { extra["tools"] = JinjaValue(tools) }

            // Plain role/content conversations go through the ChatMessage API too.
            var renderings: [() throws -> String] = []
            let plain = try XCTUnwrap(messagesJSON.array).allSatisfy { m in
                guard let mo = m.object else { return false }
                return mo.count == 2 && mo["role"]?.string != nil && mo["content"]?.string != nil
            }
            if plain {
                let messages = try XCTUnwrap(messagesJSON.array).map { m -> ChatMessage in
                    ChatMessage(role: try XCTUnwrap(m.object?["role"]?.string), content: try XCTUnwrap(m.object?["content"]?.string))
                }
                renderings.append { try template.render(messages: messages, addGenerationPrompt: agp, bosToken: bos, eosToken: eos, extra: extra) }
            }
            var jsonExtra = extra
            jsonExtra["messages"] = try ChatTemplate.messages(json: messagesJSON)
            renderings.append { try template.render(messages: [], addGenerationPrompt: agp, bosToken: bos, eosToken: eos, extra: jsonExtra) }

            for render in renderings {
                if let expected = o["output"]?.string {
                    do {
                        let got = try render()
                        XCTAssertEqual(got, expected, caseName)
                        rendered += 1
                    } catch {
                        XCTFail("\(caseName): \(error)")
                    }
                } else {
                    let words = ChatTemplateFixtures.words(o["must_contain"])
                    XCTAssertFalse(words.isEmpty, caseName)
                    expectDPOError(["raised an exception"] + words) { _ = try render() }
                    refused += 1
                }
            }
        }
        XCTAssertEqual(seenTemplates, ["smollm2", "llama-3.1", "llama-3.2", "qwen2.5", "zephyr", "mistral-v0.1", "mistral-v0.3", "mistral-nemo"])
        print("chat template fixture: \(rendered) renderings matched, \(refused) refusals matched")
        XCTAssertGreaterThan(rendered, 200)
        XCTAssertGreaterThan(refused, 20)
    }

    /// SmolLM2's template in the fixture is the one in the real GGUF (when the model is present).
    func testSmolLM2TemplateIsTheGGUFOne() throws {
        let path = TestModels.fixturesDirectory() + "/chat_templates/templates/smollm2.jinja"
        let source = try String(contentsOfFile: path, encoding: .utf8)
        let template = try ChatTemplate(source: source)
        let out = try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        XCTAssertEqual(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }
}

final class JinjaFixtureTests: XCTestCase {
    func testMicroTemplatesMatchJinja2() throws {
        let root = try ChatTemplateFixtures.load()
        let cases = try XCTUnwrap(root["micro_cases"]?.array)
        XCTAssertGreaterThan(cases.count, 100)
        var passed = 0
        for c in cases {
            let o = try XCTUnwrap(c.object)
            let name = try XCTUnwrap(o["name"]?.string)
            let source = try XCTUnwrap(o["template"]?.string)
            let context = ChatTemplateFixtures.context(o["context"])
            if let expected = o["output"]?.string {
                do {
                    var t = try ChatTemplate(source: source)
                    t.clock = { ChatTemplateFixtures.fixedNow }
                    XCTAssertEqual(try t.render(context: context), expected, name)
                    passed += 1
                } catch {
                    XCTFail("\(name): \(error)")
                }
            } else {
                let words = ChatTemplateFixtures.words(o["must_contain"])
                XCTAssertFalse(words.isEmpty, name)
                expectDPOError(words) {
                    let t = try ChatTemplate(source: source)
                    _ = try t.render(context: context)
                }
                passed += 1
            }
        }
        XCTAssertEqual(passed, cases.count)
    }
}
