/// Where a row came from: its 0-based index in the dataset and, for a file, the file and line.
public struct RowLocation: Equatable, Sendable, CustomStringConvertible {
    public var index: Int
    public var file: String?
    /// 1-based line of a JSONL file (nil for rows of a JSON array or from memory).
    public var line: Int?

    public init(index: Int, file: String? = nil, line: Int? = nil) {
        self.index = index; self.file = file; self.line = line
    }

    /// "row 4" or "row 4 (data.jsonl:5)".
    public var description: String {
        guard let file else { return "row \(index)" }
        return "row \(index) (\(file)\(line.map { ":\($0)" } ?? ""))"
    }
}

/// One dataset row: a JSON object of columns (TRL's example dict), and where it came from.
public struct DatasetRow: Equatable, Sendable {
    public var columns: JSONObject
    public var location: RowLocation

    public init(columns: JSONObject, location: RowLocation) {
        self.columns = columns; self.location = location
    }

    /// A row from a JSON value, which must be an object.
    public init(_ value: JSONValue, location: RowLocation) throws {
        guard let object = value.object else {
            throw DPOError.invalidArgument("\(location): a row must be a JSON object, not \(value.kindName)")
        }
        self.init(columns: object, location: location)
    }

    /// A row from JSON text (one object), as the Python and C doors pass rows.
    public init(json: String, index: Int) throws {
        let location = RowLocation(index: index)
        let value: JSONValue
        do { value = try JSON.parse(json) } catch let e as DPOError {
            throw DPOError.invalidArgument("\(location): bad JSON: \(e.message)")
        }
        try self.init(value, location: location)
    }

    /// Rows from JSON text holding an array of objects (a chunk of rows), numbered from `firstIndex`.
    public static func rows(jsonArray: String, firstIndex: Int) throws -> [DatasetRow] {
        let value: JSONValue
        do { value = try JSON.parse(jsonArray) } catch let e as DPOError {
            throw DPOError.invalidArgument("rows from \(firstIndex): bad JSON: \(e.message)")
        }
        guard let items = value.array else {
            throw DPOError.invalidArgument("rows from \(firstIndex): expected a JSON array of row objects, not \(value.kindName)")
        }
        return try items.enumerated().map { try DatasetRow($1, location: RowLocation(index: firstIndex + $0)) }
    }

    // MARK: Fields

    /// An error about `field` of this row.
    func error(_ field: String, _ problem: String) -> DPOError {
        .invalidArgument("\(location): '\(field)' \(problem)")
    }

    /// The value of a column that must be present (null counts as missing, as a missing column of
    /// a `datasets.Dataset` reads as None).
    func required(_ field: String) throws -> JSONValue {
        guard let v = columns[field], !v.isNull else { throw error(field, "is missing") }
        return v
    }

    func has(_ field: String) -> Bool {
        columns[field].map { !$0.isNull } ?? false
    }

    func string(_ field: String) throws -> String {
        let v = try required(field)
        guard let s = v.string else { throw error(field, "must be a string, not \(v.kindName)") }
        return s
    }

    /// A conversation: a list of message objects, each with a string "role" (TRL's `is_conversational`).
    func messages(_ field: String) throws -> [JSONValue] {
        let v = try required(field)
        guard let list = v.array else { throw error(field, "must be a list of messages, not \(v.kindName)") }
        for (i, m) in list.enumerated() {
            guard let o = m.object else { throw error(field, "message \(i) must be an object with 'role' and 'content', not \(m.kindName)") }
            guard let role = o["role"], role.string != nil else { throw error(field, "message \(i) has no string 'role'") }
        }
        return list
    }

    /// Token ids in [0, vocabSize).
    /// A list of 0/1 flags, one per token (`count`).
    func mask(_ field: String, count: Int) throws -> [UInt8] {
        let v = try required(field)
        guard let list = v.array else { throw error(field, "must be a list of 0/1 flags, not \(v.kindName)") }
        if list.count != count { throw error(field, "has \(list.count) flags for \(count) input_ids") }
        return try list.enumerated().map { j, t in
            guard let f = t.int, f == 0 || f == 1 else { throw error(field, "item \(j) is not 0 or 1") }
            return UInt8(f)
        }
    }

    func tokenIDs(_ field: String, vocabSize: Int) throws -> [Int32] {
        let v = try required(field)
        guard let list = v.array else { throw error(field, "must be a list of token ids, not \(v.kindName)") }
        return try list.enumerated().map { j, t in
            guard let id = t.int else { throw error(field, "item \(j) is not an integer (\(t.kindName))") }
            guard id >= 0 && id < vocabSize else { throw error(field, "item \(j) = \(id) is outside the vocabulary [0, \(vocabSize))") }
            return Int32(id)
        }
    }
}

extension JSONValue {
    /// The JSON kind, for error messages.
    var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    /// Whether the value is a conversation as TRL's `is_conversational` sees one: a non-empty list
    /// whose first item is an object with "role".
    var isConversation: Bool {
        guard let first = array?.first, let o = first.object else { return false }
        return o["role"] != nil
    }
}
