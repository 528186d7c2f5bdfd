import DPO
import Foundation

/// A one-line error for the user: printed as "dpo: <message>" with a non-zero exit.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Reads a JSONL file into objects, with the line number in every error.
func readJSONL(_ path: String) throws -> [(line: Int, object: JSONObject)] {
    guard fileExists(path) else { throw CLIError("\(path): no such file") }
    let bytes: [UInt8]
    do { bytes = try readFile(path, limit: FileSizeLimit.dataset) } catch { throw CLIError("\(path): \(error)") }
    // Parsed, a line takes up to about 32 bytes per byte of JSON (a JSON value per token id, the
    // rows built from them): refuse a file that cannot fit before parsing it.
    try MemoryLimit.check(Double(bytes.count) * 32, "reading the \(bytes.count) bytes of \(path)")
    var out: [(Int, JSONObject)] = []
    var lineNumber = 0
    for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        lineNumber += 1
        let trimmed = line.drop { $0 == 32 || $0 == 9 || $0 == 13 }
        if trimmed.isEmpty { continue }
        let value: JSONValue
        do { value = try JSON.parse(Array(line)) } catch let e as DPOError {
            throw CLIError("\(path):\(lineNumber): bad JSON: \(e.message)")
        }
        guard let o = value.object else { throw CLIError("\(path):\(lineNumber): each line must be a JSON object") }
        out.append((lineNumber, o))
    }
    if out.isEmpty { throw CLIError("\(path): no examples") }
    return out
}

/// A field given as token ids (`<name>_ids`), or nil when the row has none.
func tokenIDs(_ o: JSONObject, _ name: String, line: Int, path: String, vocabSize: Int) throws -> [Int32]? {
    guard let v = o[name + "_ids"] else { return nil }
    guard let list = v.array else { throw CLIError("\(path):\(line): '\(name)_ids' must be a list of token ids") }
    return try list.enumerated().map { j, t in
        guard let id = t.int else { throw CLIError("\(path):\(line): '\(name)_ids'[\(j)] is not an integer") }
        guard id >= 0 && id < vocabSize else {
            throw CLIError("\(path):\(line): token id \(id) in '\(name)_ids' is outside the vocabulary [0, \(vocabSize))")
        }
        return Int32(id)
    }
}

/// A field that is either token ids (`<name>_ids`, taken as they are) or text (`<name>`, encoded
/// by `encode`: a prompt or a completion rule of the model's TextCodec).
func tokens(_ o: JSONObject, _ name: String, line: Int, path: String, vocabSize: Int,
            encode: (String) throws -> [Int32]) throws -> [Int32] {
    if let ids = try tokenIDs(o, name, line: line, path: path, vocabSize: vocabSize) { return ids }
    if let v = o[name] {
        guard let text = v.string else { throw CLIError("\(path):\(line): '\(name)' must be a string") }
        do { return try encode(text) } catch let e as CLIError {
            throw CLIError("\(path):\(line): '\(name)': \(e.description)")
        }
    }
    throw CLIError("\(path):\(line): missing '\(name)' or '\(name)_ids'")
}

/// The rows of a data file with the line each came from.
struct DataFile<Row> {
    let path: String
    let rows: [Row]
    let lines: [Int]

    /// Runs `check` (a trainer's `check`) on every row before training starts, so a bad row stops
    /// the run before its first step with the file line that holds it.
    func check(_ check: (Row) throws -> Void) throws {
        for (row, line) in zip(rows, lines) {
            do { try check(row) } catch DPOError.invalidArgument(let text) {
                var message = Substring(text)
                for prefix in ["pair 0: ", "example 0: "] where message.hasPrefix(prefix) { message = message.dropFirst(prefix.count) }
                throw CLIError("\(path):\(line): \(message)")
            }
        }
    }
}

/// Preference pairs of a JSONL / JSON file. With a tokenizer (or none, for token-id rows) the rows
/// are TRL's formats, prepared by the engine's data layer exactly as TRL's DPOTrainer prepares
/// them (`data`: max_length, truncation_mode). With the byte tokenizer of the demo's models:
/// {prompt, chosen, rejected} text (BOS + prompt, completion + EOS) or *_ids.
func loadPreferencePairs(_ path: String, vocabSize: Int, codec: TextCodec, data: DataConfig) throws -> DataFile<PreferencePair> {
    guard case .bytes = codec else {
        let d = try prepareDataset(path, kind: .preference, codec: codec, vocabSize: vocabSize, data: data)
        return DataFile(path: path, rows: d.preferenceRows.map(\.pair), lines: d.locations.map(\.lineNumber))
    }
    let objects = try readJSONL(path)
    let rows = try objects.map { line, o in
        func field(_ name: String, _ encode: (String) throws -> [Int32]) throws -> [Int32] {
            try tokens(o, name, line: line, path: path, vocabSize: vocabSize, encode: encode)
        }
        let p = PreferencePair(promptIds: try field("prompt", codec.encodePrompt),
                               chosenIds: try field("chosen", codec.encodeCompletion),
                               rejectedIds: try field("rejected", codec.encodeCompletion))
        if p.chosenIds.isEmpty || p.rejectedIds.isEmpty { throw CLIError("\(path):\(line): empty completion") }
        return p
    }
    return DataFile(path: path, rows: rows, lines: objects.map(\.line))
}

/// SFT examples of a file: TRL's SFT formats through the data layer (as loadPreferencePairs), or,
/// with the byte tokenizer, {prompt, completion} text or *_ids.
func loadSFTExamples(_ path: String, vocabSize: Int, codec: TextCodec, data: DataConfig) throws -> DataFile<SFTExample> {
    guard case .bytes = codec else {
        let d = try prepareDataset(path, kind: .sft, codec: codec, vocabSize: vocabSize, data: data)
        let rows = try zip(d.sftRows, d.locations).map { row, at in
            do { return try row.example(location: at) } catch let e as DPOError { throw CLIError(e.message) }
        }
        return DataFile(path: path, rows: rows, lines: d.locations.map(\.lineNumber))
    }
    let objects = try readJSONL(path)
    let rows = try objects.map { line, o in
        let e = SFTExample(promptIds: try tokens(o, "prompt", line: line, path: path, vocabSize: vocabSize, encode: codec.encodePrompt),
                           completionIds: try tokens(o, "completion", line: line, path: path, vocabSize: vocabSize, encode: codec.encodeCompletion))
        if e.completionIds.isEmpty { throw CLIError("\(path):\(line): empty completion") }
        return e
    }
    return DataFile(path: path, rows: rows, lines: objects.map(\.line))
}

/// A file prepared by the engine's data layer with the codec's tokenizer (none: token ids only);
/// prints what TRL would log about dropped and truncated rows.
func prepareDataset(_ path: String, kind: PreparedDataset.Kind, codec: TextCodec, vocabSize: Int,
                    data: DataConfig) throws -> PreparedDataset {
    guard fileExists(path) else { throw CLIError("\(path): no such file") }
    var tokenizer: Tokenizer? = nil
    if case .tokenizer(let t) = codec { tokenizer = t }
    do {
        var d = PreparedDataset(kind: kind, tokenizer: try DatasetTokenizer(tokenizer: tokenizer, vocabSize: vocabSize, config: data))
        try d.addFile(path: path)
        let c = try d.finish()
        if c.dropped > 0 || c.truncated > 0 {
            say("\(path): \(c.rows) rows (\(d.format?.rawValue ?? "")): \(c.dropped) dropped (as TRL drops them), \(c.truncated) truncated to max_length \(data.maxLength.map(String.init) ?? "none")")
        }
        return d
    } catch let e as DPOError {
        throw CLIError("\(path): \(e.message)")
    }
}

extension RowLocation {
    /// The file line, else the 1-based row number.
    var lineNumber: Int { line ?? index + 1 }
}

/// A model from an HF directory or a GGUF file, or a fresh one from a config.json (random init
/// from `seed`).
func loadOrCreateModel(model: String?, config: String?, seed: UInt64, keepBaseQuantized: Bool = false) throws -> LlamaModel {
    switch (model, config) {
    case (let path?, nil):
        return try LlamaModel.load(path: path, keepBaseQuantized: keepBaseQuantized)
    case (nil, let file?):
        if keepBaseQuantized { throw CLIError("--keep-base-quantized needs a GGUF --model, not --config") }
        guard fileExists(file) else { throw CLIError("\(file): no such file") }
        let config: LlamaConfig
        do { config = try LlamaConfig(json: try JSON.parse(try readFile(file))) } catch let e as DPOError {
            throw CLIError("\(file): not a valid config.json: \(e.message)")
        }
        return try LlamaModel.randomlyInitialized(config: config, seed: seed)
    case (nil, nil):
        throw CLIError("give --model PATH (a Hugging Face model directory or a .gguf file) or --config FILE (a config.json for a fresh model)")
    default:
        throw CLIError("give either --model or --config, not both")
    }
}
