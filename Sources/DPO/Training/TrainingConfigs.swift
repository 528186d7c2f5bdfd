/// TRL's `DPOConfig` as hosts see it: one object of TRL-named fields. In TRL it subclasses
/// transformers' `TrainingArguments`, so it holds the trainer's settings (`DPOConfig`: loss,
/// reference, optimizer), the training loop's (`TrainingArguments`) and how datasets are
/// tokenized (`max_length`, `truncation_mode`). Here these are the three parts; a key goes to
/// every part that has it (`gradient_accumulation_steps` and `seed` to the optimizer and the loop),
/// and a key no part has is refused.
///
/// `max_steps` is TRL's: -1 by default, when `train()` derives the steps from `num_train_epochs`
/// and sets the optimizer's schedule to match. A positive value also sets the optimizer's schedule
/// length; otherwise a trainer driven by `step()` alone keeps `OptimizerConfig`'s 1000.
public struct DPOTrainingConfig: Equatable, Sendable {
    public var trainer = DPOConfig()
    public var args = TrainingArguments()

    public init() {}

    /// A trainer config with the loop's defaults, except the fields both share (`max_steps`,
    /// `gradient_accumulation_steps`, `seed`), which the loop takes from the trainer's.
    public init(trainer: DPOConfig) {
        self.trainer = trainer
        args.shareOptimizerFields(trainer.optimizer)
    }

    /// How the trainer's datasets are tokenized: its `max_length` and `truncation_mode`.
    public var data: DataConfig { trainer.dataConfig }

    /// From TRL-named fields (absent ones keep TRL's defaults), validated.
    public init(json: JSONObject) throws {
        for key in json.keys {
            let v = json[key]!
            let inArgs = try args.set(key, v)
            if key == "max_steps" && args.maxSteps <= 0 { continue }
            if DPOConfig.fieldNames.contains(key) {
                try trainer.set(key, v)
            } else if !inArgs {
                throw DPOError.invalidArgument("unknown DPOConfig field '\(key)'")
            }
        }
        try validate()
    }

    public func validate() throws {
        try trainer.validate()
        try args.validate()
    }

    /// Every field by TRL's name: the trainer's, then the loop's.
    public var jsonObject: JSONObject {
        var o = trainer.jsonObject
        args.write(into: &o)
        return o
    }
}

/// TRL's `SFTConfig` as hosts see it (see `DPOTrainingConfig`, also for `max_steps`): the trainer's settings
/// (`SFTConfig`), the loop's and the dataset preparation's (`DataConfig`: `max_length`,
/// `truncation_mode`, `completion_only_loss`, `assistant_only_loss`, `dataset_text_field`).
public struct SFTTrainingConfig: Equatable, Sendable {
    public var trainer = SFTConfig()
    public var args = TrainingArguments()
    public var data = DataConfig()

    public init() {}

    /// As `DPOTrainingConfig(trainer:)`; the data's `max_length` is the trainer's.
    public init(trainer: SFTConfig) {
        self.trainer = trainer
        args.shareOptimizerFields(trainer.optimizer)
        data.maxLength = trainer.maxLength
    }

    /// From TRL-named fields (absent ones keep TRL's defaults), validated.
    public init(json: JSONObject) throws {
        for key in json.keys {
            let v = json[key]!
            let inArgs = try args.set(key, v)
            let inTrainer = key == "max_steps" && args.maxSteps <= 0 ? true : try trainer.set(key, v)
            let inData = try data.set(key, v)
            if !inArgs && !inTrainer && !inData {
                throw DPOError.invalidArgument("unknown SFTConfig field '\(key)'")
            }
        }
        try validate()
    }

    public func validate() throws {
        try trainer.validate()
        try args.validate()
        try data.validate()
    }

    /// Every field by TRL's name: the trainer's, the loop's, then the data's.
    public var jsonObject: JSONObject {
        var o = trainer.jsonObject
        args.write(into: &o)
        data.write(into: &o)
        return o
    }
}

extension DPOConfig {
    /// The dataset settings of this config: `max_length` and `truncation_mode`.
    public var dataConfig: DataConfig {
        var d = DataConfig()
        d.maxLength = maxLength
        d.truncationMode = truncationMode
        return d
    }
}

extension TrainingArguments {
    /// The fields the loop shares with an optimizer config, taken from it.
    mutating func shareOptimizerFields(_ o: OptimizerConfig) {
        maxSteps = o.maxSteps
        gradientAccumulationSteps = o.gradientAccumulationSteps
        seed = o.seed
    }
}

extension SFTConfig {
    /// Sets one field by its TRL name (`max_length`, `bf16` or an optimizer field); false if it is
    /// none of them.
    public mutating func set(_ key: String, _ v: JSONValue) throws -> Bool {
        switch key {
        case "max_length": maxLength = v.isNull ? nil : try v.requireInt(key)
        case "bf16": bf16 = try v.requireBool(key)
        default: return try optimizer.set(key, v)
        }
        return true
    }

    /// Every field, TRL names.
    public var jsonObject: JSONObject {
        var o = JSONObject()
        o["max_length"] = maxLength.map { .number(Double($0)) } ?? .null
        o["bf16"] = .bool(bf16)
        optimizer.write(into: &o)
        return o
    }

    /// A config from TRL-named fields (absent ones keep TRL's defaults), validated.
    public init(json: JSONObject) throws {
        self.init()
        for key in json.keys where try !set(key, json[key]!) {
            throw DPOError.invalidArgument("unknown SFTConfig field '\(key)' (valid: max_length, bf16, \(OptimizerConfig.fieldNames.joined(separator: ", ")))")
        }
        try validate()
    }
}

extension DataConfig {
    /// Sets one SFT dataset field by its TRL name; false if the key is not one. (`max_length` is
    /// also the trainer's.)
    public mutating func set(_ key: String, _ v: JSONValue) throws -> Bool {
        switch key {
        case "max_length": maxLength = v.isNull ? nil : try v.requireInt(key)
        case "truncation_mode": truncationMode = try TruncationMode(name: try v.requireString(key))
        case "completion_only_loss": completionOnlyLoss = v.isNull ? nil : try v.requireBool(key)
        case "assistant_only_loss": assistantOnlyLoss = try v.requireBool(key)
        case "dataset_text_field": datasetTextField = try v.requireString(key)
        case "chat_template_path": chatTemplatePath = v.isNull ? nil : try v.requireString(key)
        default: return false
        }
        return true
    }

    /// The SFT dataset fields, TRL names.
    public func write(into o: inout JSONObject) {
        o["max_length"] = maxLength.map { .number(Double($0)) } ?? .null
        o["truncation_mode"] = .string(truncationMode.rawValue)
        o["completion_only_loss"] = completionOnlyLoss.map { .bool($0) } ?? .null
        o["assistant_only_loss"] = .bool(assistantOnlyLoss)
        o["dataset_text_field"] = .string(datasetTextField)
        o["chat_template_path"] = chatTemplatePath.map { .string($0) } ?? .null
    }
}
