import Foundation
import XCTest
@testable import DPO

/// The data layer's errors (every one names the row and the field), its counts, and the
/// conversions to the trainers' `PreferencePair` / `SFTExample`.
final class DatasetErrorTests: XCTestCase {
    static var smolLM2: Tokenizer?
    func tokenizer() throws -> Tokenizer {
        if let t = Self.smolLM2 { return t }
        let t = try Tokenizer.load(path: try TestModels.smolLM2GGUF())
        Self.smolLM2 = t
        return t
    }

    func rows(_ json: String) throws -> [DatasetRow] { try DatasetRow.rows(jsonArray: json, firstIndex: 0) }

    func preparePreference(_ json: String, _ config: DataConfig = DataConfig()) throws -> (rows: [TokenizedPreference], counts: DatasetCounts) {
        var p = PreferenceDatasetPreparer(tokenizer: try DatasetTokenizer(tokenizer: try tokenizer(), config: config))
        let out = try rows(json).compactMap { try p.prepare($0) }
        return (out, try p.finish())
    }

    func prepareSFT(_ json: String, _ config: DataConfig = DataConfig()) throws -> (rows: [TokenizedSFT], counts: DatasetCounts) {
        var p = SFTDatasetPreparer(tokenizer: try DatasetTokenizer(tokenizer: try tokenizer(), config: config))
        let out = try rows(json).compactMap { try p.prepare($0) }
        return (out, try p.finish())
    }

    func testMissingAndMistypedFieldsNameRowAndField() throws {
        expectDPOError(["row 1", "'rejected' is missing"]) {
            _ = try self.preparePreference(#"[{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}]"#)
        }
        expectDPOError(["row 1", "'chosen' must be a string", "a list"]) {
            _ = try self.preparePreference(#"[{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}], "rejected": "c"}]"#)
        }
        expectDPOError(["row 1", "'prompt' is missing"]) {
            _ = try self.preparePreference(#"[{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": null, "chosen": "b", "rejected": "c"}]"#)
        }
        expectDPOError(["row 0", "'chosen' message 1 has no string 'role'"]) {
            _ = try self.preparePreference(#"[{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "b"}, {"content": "x"}], "rejected": [{"role": "assistant", "content": "c"}]}]"#)
        }
        expectDPOError(["row 0", "'prompt' must be a list of messages", "a string"]) {
            _ = try self.preparePreference(#"[{"prompt": "q", "chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}]"#)
        }
        expectDPOError(["row 0", "'chosen_ids' item 1 = 49152 is outside the vocabulary"]) {
            _ = try self.preparePreference(#"[{"prompt_ids": [1], "chosen_ids": [3, 49152], "rejected_ids": [4]}]"#)
        }
        expectDPOError(["row 0", "'rejected_ids' item 0 is not an integer"]) {
            _ = try self.preparePreference(#"[{"prompt_ids": [1], "chosen_ids": [3], "rejected_ids": [4.5]}]"#)
        }
        expectDPOError(["row 0", "'chosen' is empty", "no prompt can be extracted"]) {
            _ = try self.preparePreference(#"[{"chosen": "", "rejected": "b"}]"#)
        }
        expectDPOError(["row 0", "'completion' is missing"]) { _ = try self.prepareSFT(#"[{"prompt": "a"}]"#) }
        expectDPOError(["row 1", "'text' must be a string", "a number"]) { _ = try self.prepareSFT(#"[{"text": "a"}, {"text": 3}]"#) }
        expectDPOError(["row 0", "no SFT columns", "'text'"]) { _ = try self.prepareSFT(#"[{"content": "a"}]"#) }
        expectDPOError(["row 0", "'tools' must be a list"]) {
            _ = try self.prepareSFT(#"[{"messages": [{"role": "user", "content": "q"}], "tools": 3}]"#)
        }
    }

    func testEmptyAndFullyDroppedDatasetsAreErrors() throws {
        expectDPOError(["the dataset has no rows"]) { _ = try self.preparePreference("[]") }
        expectDPOError(["the dataset has no rows"]) { _ = try self.prepareSFT("[]") }
        var config = DataConfig()
        config.maxLength = 2
        expectDPOError(["all 1 rows", "dropped", "max_length 2"]) {
            _ = try self.preparePreference(#"[{"prompt": "a long prompt here", "chosen": " b", "rejected": " c"}]"#, config)
        }
        expectDPOError(["all 1 rows", "dropped"]) {
            _ = try self.prepareSFT(#"[{"prompt": "a long prompt here", "completion": " b"}]"#, config)
        }
        // Without max_length TRL filters nothing: a row with nothing to learn stays, and fails as an example.
        config.maxLength = nil
        let empty = #"[{"prompt": [{"role": "user", "content": "q"}], "completion": []}]"#
        let (kept, counts) = try prepareSFT(empty, config)
        XCTAssertEqual(counts.dropped, 0)
        XCTAssertFalse(kept[0].hasLearnedTokens)
        expectDPOError(["no token is learned"]) { _ = try kept[0].example() }
    }

    func testDropsAndTruncationAreCounted() throws {
        var config = DataConfig()
        config.maxLength = 4
        let json = #"[{"prompt": "a b c d e f", "chosen": " x", "rejected": " y"}, {"prompt": "a", "chosen": " x y z w", "rejected": " y"}, {"prompt": "a", "chosen": " x", "rejected": " y"}]"#
        let (kept, counts) = try preparePreference(json, config)
        XCTAssertEqual(counts, { var c = DatasetCounts(); c.rows = 3; c.kept = 2; c.dropped = 1; c.truncated = 1; return c }())
        XCTAssertEqual(kept.count, 2)
        config.truncationMode = .keepEnd  // nothing is dropped with keep_end
        let (keptEnd, countsEnd) = try preparePreference(json, config)
        XCTAssertEqual(keptEnd.count, 3)
        XCTAssertEqual(countsEnd.dropped, 0)
        XCTAssertEqual(countsEnd.truncated, 2)
    }

    func testAssistantOnlyLossNeedsConversationsAndGenerationBlocks() throws {
        var config = DataConfig()
        config.assistantOnlyLoss = true
        expectDPOError(["row 0", "assistant_only_loss needs a conversational dataset"]) {
            _ = try self.prepareSFT(#"[{"text": "hello"}]"#, config)
        }
        expectDPOError(["assistant_only_loss needs a chat template with {% generation %}"]) {
            _ = try self.prepareSFT(#"[{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]"#, config)
        }
        config.chatTemplate = "{% for m in messages %}{{ m.content }}{% if m.role == 'assistant' %}{% generation %}{% endgeneration %}{% endif %}{% endfor %}"
        expectDPOError(["row 0", "marks no token of this row"]) {
            _ = try self.prepareSFT(#"[{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]"#, config)
        }
    }

    /// Offsets exist only where tokens spell the text byte for byte.
    func testEncodeWithOffsets() throws {
        let t = try tokenizer()
        let text = "<|im_start|>user\nGrüß 123 😀<|im_end|>\n"
        let (ids, offsets) = try t.encodeWithOffsets(text)
        XCTAssertEqual(ids, t.encode(text, addSpecialTokens: false))
        XCTAssertEqual(offsets.first?.lowerBound, 0)
        XCTAssertEqual(offsets.last?.upperBound, text.utf8.count)
        for (a, b) in zip(offsets, offsets.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        let spm = try Tokenizer.load(path: TestModels.fixturesDirectory() + "/tokenizer/spm")
        XCTAssertEqual(try spm.encodeWithOffsets("hello world").offsets, [0..<11], "an added token: its content")
        expectDPOError(["token offsets are unavailable"]) { _ = try spm.encodeWithOffsets("the cat sat") }
    }

    func testConversions() throws {
        let p = TokenizedPreference(promptIds: [1, 2], chosenIds: [3], rejectedIds: [4, 5])
        XCTAssertEqual(p.pair, PreferencePair(promptIds: [1, 2], chosenIds: [3], rejectedIds: [4, 5]))
        XCTAssertTrue(p.isTruncated(maxLength: 3))
        XCTAssertFalse(p.isTruncated(maxLength: 4))
        XCTAssertTrue(p.isDropped(maxLength: 2, truncationMode: .keepStart))
        XCTAssertFalse(p.isDropped(maxLength: 2, truncationMode: .keepEnd))

        let ignored = TokenizedSFT.ignoredLabel
        let full = TokenizedSFT(inputIds: [5, 6, 7], labels: [5, 6, 7])
        XCTAssertEqual(try full.example(), SFTExample(promptIds: [], completionIds: [5, 6, 7]))
        let trailing = TokenizedSFT(inputIds: [1, 2, 3, 4, 5], labels: [ignored, ignored, 3, 4, ignored])
        XCTAssertEqual(try trailing.example(), SFTExample(promptIds: [1, 2], completionIds: [3, 4]))
        let gaps = TokenizedSFT(inputIds: [1, 2, 3, 4], labels: [ignored, 2, ignored, 4])
        XCTAssertEqual(try gaps.example(), SFTExample(promptIds: [1], completionIds: [2, 3, 4], completionMask: [true, false, true]))
        expectDPOError(["no token is learned"]) { _ = try TokenizedSFT(inputIds: [1], labels: [ignored]).example() }
        expectDPOError(["1 labels for 2 input ids"]) { _ = try TokenizedSFT(inputIds: [1, 2], labels: [1]).example() }
    }

    /// The conversions feed the trainers: a prepared SFT example trains as the same example given
    /// by hand, and the tokenized pair checks against a model of SmolLM2's vocabulary.
    func testPreparedRowsAreAcceptedByTheTrainers() throws {
        let (sft, _) = try prepareSFT(#"[{"prompt": "What is 2+2?", "completion": " 4"}]"#)
        let example = try sft[0].example()
        let t = try tokenizer()
        XCTAssertEqual(example.promptIds, t.encode("What is 2+2?"))
        XCTAssertEqual(example.completionIds, t.encode(" 4<|im_end|>"))
        let (pairs, _) = try preparePreference(#"[{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go away"}]}]"#)
        let rendered = try t.chatTemplateIDs([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
        XCTAssertEqual(pairs[0].promptIds, rendered)
        XCTAssertEqual(try t.decode(pairs[0].chosenIds), "hello<|im_end|>\n")
        var config = TestModels.gqaTied
        config.vocabSize = t.vocabSize
        let trainer = try DPOTrainer(policy: try TestModels.model(config), config: DPOConfig())
        XCTAssertNoThrow(try trainer.check(pairs[0].pair))
    }
}
