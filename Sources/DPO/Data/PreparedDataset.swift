/// A dataset prepared for one trainer as TRL's trainer prepares its `train_dataset`: rows arrive
/// one at a time (from a file, or handed over by the C and Python doors), are tokenized by the
/// data layer, and only their token ids are kept. Adding is all-or-nothing: a call that fails
/// (a bad row) leaves the dataset as it was.
public struct PreparedDataset {
    public enum Kind: String, Sendable { case preference, sft }

    public let kind: Kind
    /// The prepared rows of a preference dataset (untruncated: DPO truncates in its collator).
    public private(set) var preferenceRows: [TokenizedPreference] = []
    /// The prepared rows of an SFT dataset (truncated to `max_length`).
    public private(set) var sftRows: [TokenizedSFT] = []
    private var preferencePreparer: PreferenceDatasetPreparer
    private var sftPreparer: SFTDatasetPreparer
    /// The index the next added row gets in error messages (rows read so far).
    public private(set) var nextIndex = 0
    /// Where each kept row came from (its index, and file and line for files), for later errors.
    public private(set) var locations: [RowLocation] = []

    public init(kind: Kind, tokenizer: DatasetTokenizer) {
        self.kind = kind
        preferencePreparer = PreferenceDatasetPreparer(tokenizer: tokenizer)
        sftPreparer = SFTDatasetPreparer(tokenizer: tokenizer)
    }

    /// Rows read, kept, dropped (as TRL drops them) and truncated.
    public var counts: DatasetCounts { kind == .preference ? preferencePreparer.counts : sftPreparer.counts }
    /// The dataset's format, fixed by its first row.
    public var format: DatasetFormat? { kind == .preference ? preferencePreparer.format : sftPreparer.format }
    /// Prepared rows kept.
    public var count: Int { kind == .preference ? preferenceRows.count : sftRows.count }

    /// Adds rows in order; none of them if one fails.
    public mutating func add(_ rows: [DatasetRow]) throws {
        try allOrNothing { for row in rows { try $0.addOne(row) } }
    }

    /// Runs `body`; if it throws, the dataset is put back as it was. Only the small parts are
    /// saved (the preparers' counts and format, the next index); the rows added are cut off
    /// again, so a call costs nothing in proportion to the rows already held.
    private mutating func allOrNothing(_ body: (inout PreparedDataset) throws -> Void) throws {
        let saved = (preferencePreparer, sftPreparer, nextIndex)
        let counts = (preferenceRows.count, sftRows.count, locations.count)
        do { try body(&self) } catch {
            (preferencePreparer, sftPreparer, nextIndex) = saved
            preferenceRows.removeSubrange(counts.0...)
            sftRows.removeSubrange(counts.1...)
            locations.removeSubrange(counts.2...)
            throw error
        }
    }

    /// Adds rows from JSON text: one row object, or an array of row objects. Rows are numbered on
    /// from the rows added before.
    public mutating func add(json: String) throws {
        let trimmed = json.utf8.first { !JSONLRows.isSpace($0) }
        if trimmed == UInt8(ascii: "[") {
            try add(try DatasetRow.rows(jsonArray: json, firstIndex: nextIndex))
        } else {
            try add([try DatasetRow(json: json, index: nextIndex)])
        }
    }

    /// Adds every row of a JSONL or JSON file (`DatasetFile`), streamed; none if one fails.
    public mutating func addFile(path: String) throws {
        var source = try DatasetFile.open(path: path)
        try allOrNothing { while let row = try source.next() { try $0.addOne(row) } }
    }

    private mutating func addOne(_ row: DatasetRow) throws {
        nextIndex += 1
        switch kind {
        case .preference:
            guard let r = try preferencePreparer.prepare(row) else { return }
            preferenceRows.append(r)
        case .sft:
            guard let r = try sftPreparer.prepare(row) else { return }
            sftRows.append(r)
        }
        locations.append(row.location)
    }

    /// The counts, once all rows are in: an error if the dataset has no rows or keeps none.
    @discardableResult
    public func finish() throws -> DatasetCounts {
        try kind == .preference ? preferencePreparer.finish() : sftPreparer.finish()
    }

    /// Row `i` as TRL's processed dataset holds it: `prompt_ids`, `chosen_ids`, `rejected_ids`
    /// (preference); `input_ids` and, where the row has them, `completion_mask` and `assistant_masks` (SFT).
    public func rowJSON(_ i: Int) throws -> JSONObject {
        guard i >= 0 && i < count else { throw DPOError.invalidArgument("row index \(i) is out of range [0, \(count))") }
        func ids(_ a: [Int32]) -> JSONValue { .array(a.map { .number(Double($0)) }) }
        func flags(_ a: [UInt8]) -> JSONValue { .array(a.map { .number(Double($0)) }) }
        var o = JSONObject()
        switch kind {
        case .preference:
            let r = preferenceRows[i]
            o["prompt_ids"] = ids(r.promptIds); o["chosen_ids"] = ids(r.chosenIds); o["rejected_ids"] = ids(r.rejectedIds)
        case .sft:
            let r = sftRows[i]
            o["input_ids"] = ids(r.inputIds)
            if let m = r.completionMask { o["completion_mask"] = flags(m) }
            if let m = r.assistantMask { o["assistant_masks"] = flags(m) }
        }
        return o
    }
}
