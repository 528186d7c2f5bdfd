import Glibc

/// Rows that arrive one at a time (a file being read); nil at the end.
public protocol DatasetRowSource {
    mutating func next() throws -> DatasetRow?
}

/// The rows of a dataset file: JSON Lines (one object per line) or a JSON file holding an array of
/// row objects, told apart by the first character that is not whitespace ('[' for an array).
public enum DatasetFile {
    public static func open(path: String) throws -> any DatasetRowSource {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 4096)
        var n: Int
        repeat { n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) } } while n < 0 && errno == EINTR
        if n < 0 { throw ioError("cannot read", path) }
        var bytes = head.prefix(n)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        if bytes.first(where: { !JSONLRows.isSpace($0) }) == UInt8(ascii: "[") {
            return try JSONArrayRows(path: path)
        }
        return try JSONLRows(path: path)
    }
}

/// The rows of a JSON file holding an array of row objects. The file is read whole (up to
/// `FileSizeLimit.dataset`); rows are numbered by their array position.
public struct JSONArrayRows: DatasetRowSource {
    public let path: String
    private let items: [JSONValue]
    private var index = 0

    public init(path: String) throws {
        self.path = path
        var bytes = try readFile(path, limit: FileSizeLimit.dataset)
        // Parsed, a byte of JSON takes up to about 32 bytes (a JSON value per token id).
        try MemoryLimit.check(Double(bytes.count) * 32, "reading the \(bytes.count) bytes of \(path)")
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        let value: JSONValue
        do { value = try JSON.parse(bytes) } catch let e as DPOError { throw DPOError.format("\(path): \(e.message)") }
        guard let items = value.array else {
            throw DPOError.format("\(path): expected a JSON array of row objects, not \(value.kindName)")
        }
        self.items = items
    }

    public var count: Int { items.count }

    public mutating func next() throws -> DatasetRow? {
        guard index < items.count else { return nil }
        defer { index += 1 }
        return try DatasetRow(items[index], location: RowLocation(index: index, file: path))
    }
}
