import Glibc

/// The rows of a JSON Lines file, read as a stream: a buffer of at most one line (bounded by
/// `maxLineBytes`) and one read chunk is held, never the whole file. Blank lines are skipped;
/// every error names the file and line.
public final class JSONLRows: DatasetRowSource {
    /// The longest line accepted by default (a row of text or token ids is far shorter).
    public static let defaultMaxLineBytes = 64 << 20
    static let chunkBytes = 1 << 16

    public let path: String
    public let maxLineBytes: Int
    private var fd: Int32
    private var chunk: [UInt8]
    private var chunkStart = 0, chunkEnd = 0
    private var atEnd = false
    private var line = 0
    private var rowIndex = 0

    public init(path: String, maxLineBytes: Int = JSONLRows.defaultMaxLineBytes) throws {
        guard maxLineBytes > 0 else { throw DPOError.invalidArgument("maxLineBytes must be positive, got \(maxLineBytes)") }
        self.path = path
        self.maxLineBytes = maxLineBytes
        fd = try openFile(path, O_RDONLY)
        chunk = [UInt8](repeating: 0, count: JSONLRows.chunkBytes)
    }

    deinit { if fd >= 0 { close(fd) } }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    /// The next row, or nil at the end of the file.
    public func next() throws -> DatasetRow? {
        while let bytes = try nextLine() {
            var body = bytes[...]
            if line == 1 && body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
            if body.allSatisfy(JSONLRows.isSpace) { continue }
            let location = RowLocation(index: rowIndex, file: path, line: line)
            // Parsed, a byte of JSON takes up to about 32 bytes (a JSON value per token id); the
            // check reads system limits, so only long lines pay for it.
            if body.count > 1 << 20 { try MemoryLimit.check(Double(body.count) * 32, "parsing line \(line) of \(path)") }
            let value: JSONValue
            do { value = try JSON.parse(Array(body)) } catch let e as DPOError {
                throw DPOError.format("\(path):\(line): bad JSON: \(e.message)")
            }
            let row = try DatasetRow(value, location: location)
            rowIndex += 1
            return row
        }
        return nil
    }

    /// The bytes of the next line without its "\n", or nil at the end of the file.
    private func nextLine() throws -> [UInt8]? {
        var out: [UInt8] = []
        var sawAny = false
        while true {
            if chunkStart == chunkEnd {
                if atEnd { break }
                try fill()
                if chunkStart == chunkEnd { break }
            }
            sawAny = true
            let end = chunk[chunkStart..<chunkEnd].firstIndex(of: 0x0A)
            let stop = end ?? chunkEnd
            if out.count + (stop - chunkStart) > maxLineBytes {
                throw DPOError.format("\(path):\(line + 1): the line is longer than \(maxLineBytes) bytes (limit)")
            }
            out.append(contentsOf: chunk[chunkStart..<stop])
            if let end {
                chunkStart = end + 1
                line += 1
                return out
            }
            chunkStart = chunkEnd
        }
        guard sawAny else { return nil }
        line += 1
        return out
    }

    private func fill() throws {
        var n: Int
        repeat { n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) } } while n < 0 && errno == EINTR
        if n < 0 { throw ioError("cannot read", path) }
        chunkStart = 0
        chunkEnd = n
        if n == 0 {
            atEnd = true
            close(fd)
            fd = -1
        }
    }
}
