import Foundation
import XCTest
@testable import DPO

/// The data layer against TRL 1.16's own prepared datasets (Fixtures/datasets/golden.json, written
/// by tools/make_dataset_fixtures.py): every dataset format, SmolLM2's tokenizer and chat template,
/// truncation and drops, completion and assistant masks. Ids are compared exactly.
final class DatasetGoldenTests: XCTestCase {
    static let directory = TestModels.fixturesDirectory() + "/datasets"

    struct Case {
        let name: String
        let object: JSONObject
        let rows: String
        let config: DataConfig
        var isDPO: Bool { object["trainer"]?.string == "dpo" }
        func strings(_ key: String) -> [String] { (object[key]?.array ?? []).compactMap(\.string) }
        func ints(_ key: String) -> [Int] { (object[key]?.array ?? []).compactMap(\.int) }
    }

    static func cases() throws -> [Case] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/golden.json")))
        let root = try XCTUnwrap(try JSON.parse(bytes).object)
        XCTAssertEqual(root["trl"]?.string, "1.16.0")
        let generation = try String(contentsOfFile: directory + "/generation.jinja", encoding: .utf8)
        return try XCTUnwrap(root["cases"]?.array).map { value in
            let o = try XCTUnwrap(value.object)
            let c = try XCTUnwrap(o["config"]?.object)
            var config = DataConfig()
            if let v = c["max_length"] { config.maxLength = v.int }
            if let v = c["truncation_mode"]?.string { config.truncationMode = try TruncationMode(name: v) }
            if let v = c["completion_only_loss"] { config.completionOnlyLoss = v.bool }
            if let v = c["assistant_only_loss"]?.bool { config.assistantOnlyLoss = v }
            if o["chat_template"]?.string == "generation" { config.chatTemplate = generation }
            return Case(name: try XCTUnwrap(o["name"]?.string), object: o,
                        rows: directory + "/" + (try XCTUnwrap(o["rows"]?.string)), config: config)
        }
    }

    static func ids(_ text: String) -> [Int32] {
        text.split(separator: " ").map { Int32($0)! }
    }

    func testEveryFormatMatchesTRL() throws {
        let tokenizer = try Tokenizer.load(path: try TestModels.smolLM2GGUF())
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 26)
        var formats = Set<DatasetFormat>()
        var comparedRows = 0, comparedTokens = 0
        for c in cases {
            let data = try DatasetTokenizer(tokenizer: tokenizer, config: c.config)
            let source = try JSONLRows(path: c.rows)
            var kept: [Int] = []
            if c.isDPO {
                var preparer = PreferenceDatasetPreparer(tokenizer: data)
                var got: [TokenizedPreference] = []
                while let row = try source.next() {
                    if let t = try preparer.prepare(row) { got.append(t); kept.append(row.location.index) }
                }
                let counts = try preparer.finish()
                formats.insert(try XCTUnwrap(preparer.format))
                XCTAssertEqual(kept, c.ints("kept"), c.name)
                XCTAssertEqual(counts.truncated, c.object["truncated"]?.int, "\(c.name): truncated")
                XCTAssertEqual(counts.rows, 60, c.name)
                XCTAssertEqual(counts.dropped, 60 - kept.count, c.name)
                let (p, ch, rj) = (c.strings("prompt_ids"), c.strings("chosen_ids"), c.strings("rejected_ids"))
                guard p.count == got.count, ch.count == got.count, rj.count == got.count else {
                    XCTFail("\(c.name): \(got.count) rows, golden \(p.count)"); continue
                }
                for (k, t) in got.enumerated() {
                    XCTAssertEqual(t.promptIds, Self.ids(p[k]), "\(c.name) row \(kept[k]) prompt_ids")
                    XCTAssertEqual(t.chosenIds, Self.ids(ch[k]), "\(c.name) row \(kept[k]) chosen_ids")
                    XCTAssertEqual(t.rejectedIds, Self.ids(rj[k]), "\(c.name) row \(kept[k]) rejected_ids")
                    comparedTokens += t.promptIds.count + t.chosenIds.count + t.rejectedIds.count
                }
                // The collator's truncation, as the engine's DPOTrainer applies it to the pairs.
                if c.object["chosen_input_ids"] != nil {
                    for (side, pick) in [("chosen", \TokenizedPreference.chosenIds), ("rejected", \TokenizedPreference.rejectedIds)] {
                        let golden = c.strings("\(side)_input_ids"), starts = c.ints("\(side)_prompt_len")
                        XCTAssertEqual(golden.count, got.count, c.name)
                        for (k, t) in got.enumerated() where k < golden.count {
                            let s = MaskedSequence(prompt: t.promptIds, completion: t[keyPath: pick],
                                                   maxLength: c.config.maxLength, mode: c.config.truncationMode)
                            XCTAssertEqual(s.tokens, Self.ids(golden[k]), "\(c.name) row \(kept[k]) \(side) collated")
                            XCTAssertEqual(s.promptLength, starts[k], "\(c.name) row \(kept[k]) \(side) completion start")
                        }
                    }
                }
            } else {
                var preparer = SFTDatasetPreparer(tokenizer: data)
                var got: [TokenizedSFT] = []
                while let row = try source.next() {
                    if let t = try preparer.prepare(row) { got.append(t); kept.append(row.location.index) }
                }
                let counts = try preparer.finish()
                formats.insert(try XCTUnwrap(preparer.format))
                XCTAssertEqual(kept, c.ints("kept"), c.name)
                XCTAssertEqual(counts.truncated, c.object["truncated"]?.int, "\(c.name): truncated")
                XCTAssertEqual(counts.dropped, 60 - kept.count, c.name)
                let (ids, labels) = (c.strings("input_ids"), c.strings("labels"))
                guard ids.count == got.count, labels.count == got.count else {
                    XCTFail("\(c.name): \(got.count) rows, golden \(ids.count)"); continue
                }
                for (k, t) in got.enumerated() {
                    XCTAssertEqual(t.inputIds, Self.ids(ids[k]), "\(c.name) row \(kept[k]) input_ids")
                    let mask = String(t.labels.map { $0 == TokenizedSFT.ignoredLabel ? "0" : "1" })
                    XCTAssertEqual(mask, labels[k], "\(c.name) row \(kept[k]) labels")
                    for (label, id) in zip(t.labels, t.inputIds) where label != TokenizedSFT.ignoredLabel {
                        XCTAssertEqual(label, id, "\(c.name) row \(kept[k]): a learned label is its token")
                    }
                    comparedTokens += t.inputIds.count
                }
            }
            comparedRows += kept.count
        }
        // Every TRL format has golden rows (prompt_ids + completion_ids rows are this project's own).
        XCTAssertEqual(formats, Set(DatasetFormat.allCases).subtracting([.tokenizedPromptCompletion]), "every format has golden rows")
        print("DatasetGoldenTests: \(cases.count) cases, \(comparedRows) rows, \(comparedTokens) token ids equal to TRL 1.16's")
    }

    /// Where `{% generation %}` output lands, against transformers' `generation_indices` (as UTF-8
    /// byte offsets): blocks in loops, under whitespace control, inside `set` blocks, nested, empty.
    func testGenerationSpansMatchTransformers() throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.directory + "/golden.json")))
        let root = try XCTUnwrap(try JSON.parse(bytes).object)
        let messages = try ChatTemplate.messages(json: try XCTUnwrap(root["messages"]))
        let cases = try XCTUnwrap(root["generation_spans"]?.array)
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let o = try XCTUnwrap(c.object)
            let name = try XCTUnwrap(o["name"]?.string)
            let template = try ChatTemplate(source: try XCTUnwrap(o["template"]?.string))
            XCTAssertTrue(template.hasGenerationBlocks, name)
            let out = try template.renderTracked(context: ["messages": messages, "add_generation_prompt": .bool(false)])
            XCTAssertEqual(out.text, o["text"]?.string, name)
            let spans = try XCTUnwrap(o["spans"]?.array).map { pair -> Range<Int> in
                let p = pair.array ?? []
                return (p.first?.int ?? -1)..<(p.last?.int ?? -1)
            }
            XCTAssertEqual(out.generationSpans, spans, name)
        }
        let smol = try ChatTemplate(source: try XCTUnwrap(Tokenizer.load(path: try TestModels.smolLM2GGUF()).chatTemplate))
        XCTAssertFalse(smol.hasGenerationBlocks)
    }
}
