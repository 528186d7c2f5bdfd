/// `TrainingArguments` as a JSON object keyed by transformers' field names (what the bindings and
/// C hosts pass; see `DPOTrainingConfig`). Unknown keys are left to the caller; wrong types are
/// refused with the key's name.
extension TrainingArguments {
    /// transformers' names of the fields, in the order `write(into:)` writes them.
    public static let fieldNames = ["output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                                    "per_device_eval_batch_size", "gradient_accumulation_steps", "logging_steps",
                                    "logging_first_step", "logging_last_step", "eval_strategy", "eval_steps",
                                    "save_strategy", "save_steps", "save_total_limit", "seed", "data_seed", "shuffle",
                                    "dataloader_drop_last", "resume_from_checkpoint", "report_to", "logging_dir", "disable_tqdm"]

    public func write(into o: inout JSONObject) {
        o["output_dir"] = .string(outputDir)
        o["num_train_epochs"] = .number(numTrainEpochs)
        o["max_steps"] = .number(Double(maxSteps))
        o["per_device_train_batch_size"] = .number(Double(perDeviceTrainBatchSize))
        o["per_device_eval_batch_size"] = .number(Double(perDeviceEvalBatchSize))
        o["gradient_accumulation_steps"] = .number(Double(gradientAccumulationSteps))
        o["logging_steps"] = .number(Double(loggingSteps))
        o["logging_first_step"] = .bool(loggingFirstStep)
        o["logging_last_step"] = .bool(loggingLastStep)
        o["eval_strategy"] = .string(evalStrategy.rawValue)
        o["eval_steps"] = evalSteps.map { .number(Double($0)) } ?? .null
        o["save_strategy"] = .string(saveStrategy.rawValue)
        o["save_steps"] = .number(Double(saveSteps))
        o["save_total_limit"] = saveTotalLimit.map { .number(Double($0)) } ?? .null
        o["seed"] = .number(Double(seed))
        o["data_seed"] = dataSeed.map { .number(Double($0)) } ?? .null
        o["shuffle"] = .bool(shuffle)
        o["dataloader_drop_last"] = .bool(dataloaderDropLast)
        o["resume_from_checkpoint"] = resumeFromCheckpoint.map { .string($0) } ?? .null
        o["report_to"] = .array(reportTo.map { .string($0) })
        o["logging_dir"] = loggingDir.map { .string($0) } ?? .null
        o["disable_tqdm"] = .bool(disableTqdm)
    }

    /// Sets one field by its transformers name; returns false if the key is not one of
    /// `fieldNames`. `report_to` takes a name or a list of names, as transformers.
    public mutating func set(_ key: String, _ v: JSONValue) throws -> Bool {
        func seedValue() throws -> UInt64 {
            let s = try v.requireInt(key)
            if s < 0 { throw DPOError.invalidArgument("\(key) must be >= 0, got \(s)") }
            return UInt64(s)
        }
        switch key {
        case "output_dir": outputDir = try v.requireString(key)
        case "num_train_epochs": numTrainEpochs = try v.requireDouble(key)
        case "max_steps": maxSteps = try v.requireInt(key)
        case "per_device_train_batch_size": perDeviceTrainBatchSize = try v.requireInt(key)
        case "per_device_eval_batch_size": perDeviceEvalBatchSize = try v.requireInt(key)
        case "gradient_accumulation_steps": gradientAccumulationSteps = try v.requireInt(key)
        case "logging_steps": loggingSteps = try v.requireInt(key)
        case "logging_first_step": loggingFirstStep = try v.requireBool(key)
        case "logging_last_step": loggingLastStep = try v.requireBool(key)
        case "eval_strategy": evalStrategy = try IntervalStrategy(name: try v.requireString(key), field: key)
        case "eval_steps": evalSteps = v.isNull ? nil : try v.requireInt(key)
        case "save_strategy": saveStrategy = try IntervalStrategy(name: try v.requireString(key), field: key)
        case "save_steps": saveSteps = try v.requireInt(key)
        case "save_total_limit": saveTotalLimit = v.isNull ? nil : try v.requireInt(key)
        case "seed": seed = try seedValue()
        case "data_seed": dataSeed = v.isNull ? nil : try seedValue()
        case "shuffle": shuffle = try v.requireBool(key)
        case "dataloader_drop_last": dataloaderDropLast = try v.requireBool(key)
        case "resume_from_checkpoint": resumeFromCheckpoint = v.isNull ? nil : try v.requireString(key)
        case "report_to":
            if let s = v.string { reportTo = [s] } else if let a = v.array {
                reportTo = try a.map { try $0.requireString(key) }
            } else { throw DPOError.invalidArgument("report_to must be a string or a list of strings, got \(JSON.serialize(v, pretty: false))") }
        case "logging_dir": loggingDir = v.isNull ? nil : try v.requireString(key)
        case "disable_tqdm": disableTqdm = try v.requireBool(key)
        default: return false
        }
        return true
    }
}
