@testable import DPO
import XCTest

/// TRL-shaped configs (trainer + TrainingArguments + data fields in one object) and the prepared
/// datasets the C and Python doors hand to the training loop.
final class TrainingConfigTests: XCTestCase {
    func testDPOConfigJSONRoutesEveryFieldAndRoundTrips() throws {
        let c = try DPOTrainingConfig(json: try JSON.parse("""
            {"beta": 0.3, "learning_rate": 0.001, "max_steps": 7, "seed": 5, "output_dir": "run",
             "num_train_epochs": 2, "per_device_train_batch_size": 4, "eval_strategy": "epoch",
             "report_to": "none", "max_length": 64, "truncation_mode": "keep_end", "data_seed": 9}
            """).object!)
        XCTAssertEqual(c.trainer.beta, 0.3)
        XCTAssertEqual(c.trainer.optimizer.maxSteps, 7)
        XCTAssertEqual(c.args.maxSteps, 7)
        XCTAssertEqual(c.trainer.optimizer.seed, 5)
        XCTAssertEqual(c.args.seed, 5)
        XCTAssertEqual(c.args.dataSeed, 9)
        XCTAssertEqual(c.args.outputDir, "run")
        XCTAssertEqual(c.args.evalStrategy, .epoch)
        XCTAssertEqual(c.args.reportTo, ["none"])
        XCTAssertEqual(c.data.maxLength, 64)
        XCTAssertEqual(c.data.truncationMode, .keepEnd)
        XCTAssertEqual(try DPOTrainingConfig(json: c.jsonObject), c)

        // TRL's max_steps default: -1 for the loop; the optimizer keeps its schedule length.
        let d = DPOTrainingConfig()
        XCTAssertEqual(d.jsonObject["max_steps"]?.int, -1)
        XCTAssertEqual(try DPOTrainingConfig(json: d.jsonObject).trainer.optimizer.maxSteps, d.trainer.optimizer.maxSteps)

        expectDPOError(["unknown DPOConfig field 'betta'"]) { _ = try DPOTrainingConfig(json: ["betta": .number(1)]) }
        expectDPOError(["eval_strategy", "often"]) { _ = try DPOTrainingConfig(json: ["eval_strategy": .string("often")]) }
        expectDPOError(["per_device_train_batch_size"]) { _ = try DPOTrainingConfig(json: ["per_device_train_batch_size": .number(0)]) }
        expectDPOError(["report_to"]) { _ = try DPOTrainingConfig(json: ["report_to": .number(1)]) }
    }

    func testSFTConfigJSONHoldsTheDataFields() throws {
        let c = try SFTTrainingConfig(json: try JSON.parse("""
            {"max_length": 32, "completion_only_loss": false, "assistant_only_loss": true,
             "dataset_text_field": "body", "chat_template_path": "t.jinja", "logging_steps": 3}
            """).object!)
        XCTAssertEqual(c.trainer.maxLength, 32)
        XCTAssertEqual(c.data.maxLength, 32)
        XCTAssertEqual(c.data.completionOnlyLoss, false)
        XCTAssertTrue(c.data.assistantOnlyLoss)
        XCTAssertEqual(c.data.datasetTextField, "body")
        XCTAssertEqual(c.data.chatTemplatePath, "t.jinja")
        XCTAssertEqual(c.args.loggingSteps, 3)
        XCTAssertEqual(try SFTTrainingConfig(json: c.jsonObject), c)
        expectDPOError(["unknown SFTConfig field 'beta'"]) { _ = try SFTTrainingConfig(json: ["beta": .number(1)]) }
    }

    func testPreparedDatasetIsAllOrNothingAndNamesRows() throws {
        let data = try DatasetTokenizer(tokenizer: nil, vocabSize: 32)
        var d = PreparedDataset(kind: .preference, tokenizer: data)
        try d.add(json: #"[{"prompt_ids":[1,2],"chosen_ids":[5],"rejected_ids":[6]}]"#)
        expectDPOError(["row 2", "outside the vocabulary"]) {
            try d.add(json: #"[{"prompt_ids":[1],"chosen_ids":[5],"rejected_ids":[6]},{"prompt_ids":[1],"chosen_ids":[40],"rejected_ids":[6]}]"#)
        }
        XCTAssertEqual(d.count, 1)
        XCTAssertEqual(d.nextIndex, 1)
        expectDPOError(["row 1", "prompt_ids", "the row is standard preference"]) { try d.add(json: #"{"prompt":"a","chosen":"b","rejected":"c"}"#) }
        var text = PreparedDataset(kind: .preference, tokenizer: data)
        expectDPOError(["row 0", "needs a tokenizer"]) { try text.add(json: #"{"prompt":"a","chosen":"b","rejected":"c"}"#) }
        try d.add(json: #"{"prompt_ids":[3],"chosen_ids":[5,7],"rejected_ids":[6]}"#)
        XCTAssertEqual(d.counts.rows, 2)
        XCTAssertEqual(JSON.serialize(.object(try d.rowJSON(1)), pretty: false),
                       #"{"prompt_ids":[3],"chosen_ids":[5,7],"rejected_ids":[6]}"#)
        XCTAssertEqual(d.locations.map(\.index), [0, 1])
        expectDPOError(["out of range"]) { _ = try d.rowJSON(2) }

        var s = PreparedDataset(kind: .sft, tokenizer: data)
        try s.add(json: #"[{"input_ids":[1,2,3],"completion_mask":[0,1,1]},{"input_ids":[4,5],"completion_mask":[0,1]}]"#)
        XCTAssertEqual(s.format, .tokenizedLanguageModeling)
        // TRL: the completion mask of input_ids rows counts only with completion_only_loss.
        XCTAssertEqual(try s.sftRows[0].example(), SFTExample(promptIds: [], completionIds: [1, 2, 3]))
        expectDPOError(["row 2", "completion_mask", "3 flags for 2"]) { try s.add(json: #"{"input_ids":[1,2],"completion_mask":[0,1,1]}"#) }
        var pc = PreparedDataset(kind: .sft, tokenizer: data)
        try pc.add(json: #"{"prompt_ids":[7],"completion_ids":[8,9]}"#)
        XCTAssertEqual(pc.format, .tokenizedPromptCompletion)
        XCTAssertEqual(try pc.sftRows[0].example(), SFTExample(promptIds: [7], completionIds: [8, 9]))
        expectDPOError(["no rows"]) { try PreparedDataset(kind: .sft, tokenizer: data).finish() }
    }
}
