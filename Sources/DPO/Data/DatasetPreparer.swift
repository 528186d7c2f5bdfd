// What TRL's trainers do across a dataset, for rows that arrive one at a time (a file being read,
// rows handed over by the Python door): the format is fixed by the first row, every row must fit
// it, rows TRL drops are dropped here too and counted, truncation is counted, and a dataset with
// no rows is an error.

/// Counts of a prepared dataset, for the training loop's log.
public struct DatasetCounts: Equatable, Sendable {
    /// Rows read.
    public var rows = 0
    /// Rows kept (`rows - dropped`).
    public var kept = 0
    /// Rows TRL drops: DPO with `keep_start` when the prompt alone fills `max_length`; SFT, with
    /// `max_length` set, when no learned token is left.
    public var dropped = 0
    /// Kept rows that `max_length` shortens (DPO: prompt + chosen or prompt + rejected; SFT: the row).
    public var truncated = 0

    public init() {}
}

/// Prepares a preference dataset row by row as DPOTrainer does.
public struct PreferenceDatasetPreparer {
    public let tokenizer: DatasetTokenizer
    /// The dataset's format, fixed by its first row.
    public private(set) var format: DatasetFormat?
    public private(set) var counts = DatasetCounts()

    public init(tokenizer: DatasetTokenizer) { self.tokenizer = tokenizer }

    /// The row's ids, or nil when TRL drops the row (counted in `counts.dropped`).
    public mutating func prepare(_ row: DatasetRow) throws -> TokenizedPreference? {
        let format = try self.format ?? DatasetFormat.preference(of: row)
        let t = try explained(row, format, (try? DatasetFormat.preference(of: row))) {
            try tokenizer.preference(row, format: format)
        }
        self.format = format
        counts.rows += 1
        let config = tokenizer.config
        if t.isDropped(maxLength: config.maxLength, truncationMode: config.truncationMode) {
            counts.dropped += 1
            return nil
        }
        counts.kept += 1
        if t.isTruncated(maxLength: config.maxLength) { counts.truncated += 1 }
        return t
    }

    /// The counts once every row went through `prepare`; an error if there were no rows or none is kept.
    public func finish() throws -> DatasetCounts {
        try checkCounts(counts, maxLength: tokenizer.config.maxLength)
        return counts
    }
}

/// Prepares an SFT dataset row by row as SFTTrainer does.
public struct SFTDatasetPreparer {
    public let tokenizer: DatasetTokenizer
    /// The dataset's format, fixed by its first row.
    public private(set) var format: DatasetFormat?
    public private(set) var counts = DatasetCounts()

    public init(tokenizer: DatasetTokenizer) { self.tokenizer = tokenizer }

    /// The row's ids and labels, or nil when TRL drops the row (counted in `counts.dropped`).
    /// Without `max_length` TRL keeps a row with no learned token; its `example()` is then an error.
    public mutating func prepare(_ row: DatasetRow) throws -> TokenizedSFT? {
        let textField = tokenizer.config.datasetTextField
        let format = try self.format ?? DatasetFormat.sft(of: row, textField: textField)
        let t = try explained(row, format, (try? DatasetFormat.sft(of: row, textField: textField))) {
            try tokenizer.sft(row, format: format)
        }
        self.format = format
        counts.rows += 1
        // TRL filters only after truncating, so only with max_length set.
        if tokenizer.config.maxLength != nil && !t.hasLearnedTokens {
            counts.dropped += 1
            return nil
        }
        counts.kept += 1
        if t.truncated { counts.truncated += 1 }
        return t
    }

    /// The counts once every row went through `prepare`; an error if there were no rows or none is kept.
    public func finish() throws -> DatasetCounts {
        try checkCounts(counts, maxLength: tokenizer.config.maxLength)
        return counts
    }
}

/// Runs `prepare`; when it refuses a row whose columns make another format than the dataset's
/// (fixed by its first row), the error says so after naming the field.
private func explained<T>(_ row: DatasetRow, _ dataset: DatasetFormat, _ own: DatasetFormat?, _ prepare: () throws -> T) throws -> T {
    do { return try prepare() } catch DPOError.invalidArgument(let message) {
        guard let own, own != dataset else { throw DPOError.invalidArgument(message) }
        throw DPOError.invalidArgument("\(message) (the row is \(own.rawValue), the dataset \(dataset.rawValue): every row must have its first row's columns)")
    }
}

private func checkCounts(_ counts: DatasetCounts, maxLength: Int?) throws {
    if counts.rows == 0 { throw DPOError.invalidArgument("the dataset has no rows") }
    if counts.kept == 0 {
        throw DPOError.invalidArgument("all \(counts.rows) rows of the dataset were dropped: with max_length \(maxLength.map(String.init) ?? "unset") none keeps a token to learn")
    }
}
