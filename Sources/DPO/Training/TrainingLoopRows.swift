/// Loops over the data layer's prepared rows (TRL's processed datasets) directly.
extension TrainingLoop where T == DPOTrainer {
    /// `trainRows` / `evalRows`: what `PreferenceDatasetPreparer` produced (`prompt_ids`,
    /// `chosen_ids`, `rejected_ids`); the trainer truncates to its `max_length` as TRL's collator does.
    public convenience init(trainer: DPOTrainer, args: TrainingArguments, trainRows: [TokenizedPreference],
                            evalRows: [TokenizedPreference]? = nil, callbacks: [TrainerCallback] = []) throws {
        try self.init(trainer: trainer, args: args, trainDataset: trainRows.map(\.pair),
                      evalDataset: evalRows?.map(\.pair), callbacks: callbacks)
    }
}

extension TrainingLoop where T == SFTTrainer {
    /// `trainRows` / `evalRows`: what `SFTDatasetPreparer` produced; a row that is not one
    /// prompt + completion (`TokenizedSFT.example`) is an error naming its index in the list.
    public convenience init(trainer: SFTTrainer, args: TrainingArguments, trainRows: [TokenizedSFT],
                            evalRows: [TokenizedSFT]? = nil, callbacks: [TrainerCallback] = []) throws {
        func examples(_ rows: [TokenizedSFT]) throws -> [SFTExample] {
            try rows.enumerated().map { i, row in try row.example(location: RowLocation(index: i)) }
        }
        try self.init(trainer: trainer, args: args, trainDataset: try examples(trainRows),
                      evalDataset: try evalRows.map(examples), callbacks: callbacks)
    }
}
