// Reader for GGUF files (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), versions 2
// and 3, little-endian:
//
//     u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//     metadata_kv_count x { string key | u32 value_type | value }
//     tensor_count x { string name | u32 n_dims | n_dims x u64 ne | u32 ggml_type | u64 offset }
//     padding to `general.alignment` (default 32) | tensor data
//
// A string is a u64 byte length and UTF-8 bytes; an array value is a u32 element type, a u64
// count and the elements (which may be arrays again). `ne[0]` is the fastest-varying dimension,
// so the row-major (PyTorch / Hugging Face) shape is `ne` reversed. Tensor offsets are relative
// to the start of the data section and multiples of the alignment.
//
// `GGUFFile.open` validates the whole header up front (every length against the bytes the file
// has, every tensor inside the file, no two overlapping); tensor data is then read on demand with
// pread(2) and dequantized to fp32 (GGUFDequantize.swift).

import Glibc

#if _endian(big)
#error("swift-dpo's GGUF I/O assumes a little-endian host")
#endif

/// One tensor of a GGUF file, validated against the file.
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    /// The dimensions as stored (ggml's `ne`, fastest-varying first).
    public let dimensions: [Int]
    /// The row-major shape (Hugging Face / PyTorch order): `dimensions` reversed.
    public var shape: [Int] { dimensions.reversed() }
    public let type: GGMLType
    /// The offset of the tensor's bytes from the start of the data section (as stored).
    public let dataOffset: Int
    /// The absolute offset of the tensor's bytes in the file.
    public let offset: Int
    /// The size of the tensor's bytes in the file.
    public let byteCount: Int

    /// The number of elements.
    public var count: Int { dimensions.reduce(1, *) }
}

/// An open GGUF file whose header has been fully validated.
public final class GGUFFile: Sendable {
    /// The GGUF versions this reader accepts (1 used 32-bit lengths and is long obsolete).
    public static let supportedVersions = 2...3
    /// ggml's GGML_MAX_DIMS.
    public static let maxDimensions = 4
    /// How deeply arrays may nest in metadata (gguf-py writes arrays of arrays; real files use
    /// at most two levels).
    public static let maxArrayDepth = 8
    static let magic: UInt32 = 0x4655_4747  // "GGUF" read as a little-endian u32

    public let path: String
    public let version: Int
    /// The data alignment: `general.alignment`, or 32 when absent.
    public let alignment: Int
    public let metadata: GGUFMetadata
    /// The tensors in file order.
    public let tensors: [GGUFTensorInfo]
    /// The offset of the data section in the file.
    public let dataStart: Int

    private let fd: Int32
    private let index: [String: Int]

    private init(path: String, fd: Int32, version: Int, alignment: Int, metadata: GGUFMetadata,
                 tensors: [GGUFTensorInfo], dataStart: Int) {
        self.path = path
        self.fd = fd
        self.version = version
        self.alignment = alignment
        self.metadata = metadata
        self.tensors = tensors
        self.dataStart = dataStart
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        self.index = index
    }

    deinit { close(fd) }

    /// Whether `path` is a regular file starting with the GGUF magic (no other check).
    public static func isGGUF(path: String) -> Bool {
        guard let fd = try? openFile(path, O_RDONLY) else { return false }
        defer { close(fd) }
        var word: UInt32 = 0
        guard (try? withUnsafeMutableBytes(of: &word) { try preadFully(fd, $0, offset: 0, path: path) }) != nil else { return false }
        return UInt32(littleEndian: word) == magic
    }

    /// Opens `path` and validates its header: a malformed file throws `DPOError.format` naming the
    /// file and what is wrong, an unreadable one `DPOError.io`.
    public static func open(path: String) throws -> GGUFFile {
        let fd = try openFile(path, O_RDONLY)
        do {
            var r = GGUFHeaderReader(fd: fd, path: path, fileSize: try fileSize(fd, path: path))
            let header = try parseHeader(&r)
            return GGUFFile(path: path, fd: fd, version: header.version, alignment: header.alignment,
                            metadata: header.metadata, tensors: header.tensors, dataStart: header.dataStart)
        } catch {
            close(fd)
            throw error
        }
    }

    /// The tensor named `name`, if any.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        index[name].map { tensors[$0] }
    }

    /// Reads tensor `name` into `destination`, dequantized to fp32 exactly as ggml does (see
    /// `GGMLType.isReadableAsFloat`). Throws if the tensor is missing, `destination.count` differs
    /// from its element count, or its type cannot be dequantized (the error names the type).
    public func readFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let info = tensor(named: name) else {
            throw DPOError.invalidArgument("\(path): no tensor named '\(name)'")
        }
        guard destination.count == info.count else {
            throw DPOError.invalidArgument(
                "\(path): tensor '\(name)' has \(info.count) elements, destination holds \(destination.count)")
        }
        guard info.type.isReadableAsFloat else {
            throw DPOError.format("\(path): tensor '\(name)' has ggml type \(info.type.name), which swift-dpo cannot dequantize (supported: \(GGMLType.readableNames))")
        }
        guard info.count > 0, let out = destination.baseAddress else { return }
        if info.type == .F32 {
            try preadFully(fd, UnsafeMutableRawBufferPointer(destination), offset: info.offset, path: path)
            return
        }
        // Whole blocks at a time, about 1 MiB of file bytes per read.
        let (blockSize, blockBytes) = (info.type.blockSize, info.type.bytesPerBlock)
        let blocks = info.count / blockSize
        let blocksPerChunk = Swift.max(1, (1 << 20) / blockBytes)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.min(blocks, blocksPerChunk) * blockBytes, alignment: 16)
        defer { scratch.deallocate() }
        var done = 0
        while done < blocks {
            let n = Swift.min(blocksPerChunk, blocks - done)
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n * blockBytes])
            try preadFully(fd, raw, offset: info.offset + done * blockBytes, path: path)
            ggmlDequantize(info.type, UnsafeRawPointer(raw.baseAddress!), blocks: n, into: out + done * blockSize)
            done += n
        }
    }

    /// Reads tensor `name` into a new array (see `readFloats(_:into:)`).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensor(named: name) else {
            throw DPOError.invalidArgument("\(path): no tensor named '\(name)'")
        }
        try MemoryLimit.check(Double(info.count) * 4, "\(path): tensor '\(name)'")
        return try [Float](unsafeUninitializedCapacity: info.count) { buffer, initialized in
            initialized = 0
            try readFloats(name, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<info.count]))
            initialized = info.count
        }
    }

    /// Reads the raw bytes of tensor `name` as stored (any type).
    public func rawBytes(_ name: String) throws -> [UInt8] {
        guard let info = tensor(named: name) else {
            throw DPOError.invalidArgument("\(path): no tensor named '\(name)'")
        }
        try MemoryLimit.check(Double(info.byteCount), "\(path): tensor '\(name)'")
        var bytes = [UInt8](repeating: 0, count: info.byteCount)
        try bytes.withUnsafeMutableBytes { try preadFully(fd, $0, offset: info.offset, path: path) }
        return bytes
    }
}

// MARK: - Header parsing

private struct ParsedHeader {
    var version = 0
    var alignment = 32
    var metadata = GGUFMetadata()
    var tensors: [GGUFTensorInfo] = []
    var dataStart = 0
}

private func parseHeader(_ r: inout GGUFHeaderReader) throws -> ParsedHeader {
    var h = ParsedHeader()
    guard r.fileSize >= 4 else { throw r.fail("file is \(r.fileSize) bytes, too short for a GGUF header") }
    let magic = try r.read(UInt32.self, "the magic")
    guard magic == GGUFFile.magic else {
        throw r.fail(String(format4: magic) + " is not the GGUF magic: not a GGUF file")
    }
    let version = try r.read(UInt32.self, "the version")
    // gguf-py's rule: a version whose low 16 bits are zero was written big-endian.
    if version & 0xFFFF == 0 && version != 0 {
        throw r.fail("big-endian GGUF (version field \(version.byteSwapped) byte-swapped) is not supported")
    }
    guard GGUFFile.supportedVersions.contains(Int(version)) else {
        throw r.fail("GGUF version \(version) is not supported (supported: 2 and 3)")
    }
    h.version = Int(version)
    let tensorCount = try r.read(UInt64.self, "the tensor count")
    let keyCount = try r.read(UInt64.self, "the metadata key count")
    // The smallest key-value pair is 13 bytes (empty key, type, one-byte value); the smallest
    // tensor entry 32 (empty name, n_dims, one dimension, type, offset).
    guard keyCount <= UInt64(r.remaining / 13) else {
        throw r.fail("metadata key count \(keyCount) cannot fit in the \(r.remaining) bytes left in the file")
    }
    guard tensorCount <= UInt64(r.remaining / 32) else {
        throw r.fail("tensor count \(tensorCount) cannot fit in the \(r.remaining) bytes left in the file")
    }

    for k in 0..<Int(keyCount) {
        let at = r.position
        let key = try r.string("metadata key \(k)")
        let rawType = try r.read(UInt32.self, "the type of metadata key '\(key)'")
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw r.fail("metadata key '\(key)' at byte \(at) has unknown value type \(rawType)")
        }
        guard h.metadata[key] == nil else { throw r.fail("metadata key '\(key)' appears twice") }
        h.metadata[key] = try readValue(&r, type, key: key, depth: 0)
    }

    if let value = h.metadata["general.alignment"] {
        guard case .uint32(let a) = value else {
            throw r.fail("general.alignment must be a UINT32, got \(value.type.name)")
        }
        guard a != 0 && a & (a - 1) == 0 else {
            throw r.fail("general.alignment \(a) is not a power of two")
        }
        h.alignment = Int(a)
    }

    var infos: [(name: String, dims: [Int], type: GGMLType, offset: Int, bytes: Int)] = []
    var names = Set<String>()
    infos.reserveCapacity(Int(tensorCount))
    for t in 0..<Int(tensorCount) {
        let name = try r.string("the name of tensor \(t)")
        guard names.insert(name).inserted else { throw r.fail("tensor '\(name)' appears twice") }
        let nDims = try r.read(UInt32.self, "the dimension count of tensor '\(name)'")
        guard nDims >= 1 && nDims <= UInt32(GGUFFile.maxDimensions) else {
            throw r.fail("tensor '\(name)' has \(nDims) dimensions (supported: 1 to \(GGUFFile.maxDimensions))")
        }
        var dims: [Int] = []
        var count = 1
        for _ in 0..<Int(nDims) {
            let d = try r.read(UInt64.self, "the dimensions of tensor '\(name)'")
            guard d <= UInt64(Int.max), case let (p, false) = count.multipliedReportingOverflow(by: Int(d)) else {
                throw r.fail("tensor '\(name)' dimensions overflow (dimension \(d))")
            }
            dims.append(Int(d))
            count = p
        }
        let rawType = try r.read(UInt32.self, "the type of tensor '\(name)'")
        guard let type = GGMLType(rawValue: rawType), let (blockSize, blockBytes) = type.blockLayout else {
            throw r.fail("tensor '\(name)' has unknown ggml type \(rawType)")
        }
        guard dims[0] % blockSize == 0 else {
            throw r.fail("tensor '\(name)' of type \(type.name) has a first dimension \(dims[0]) that is not a multiple of its block size \(blockSize)")
        }
        // Blocks never overflow when elements do not (blockBytes <= 4 * blockSize + 8 ... but check anyway).
        guard case let (bytes, false) = (count / blockSize).multipliedReportingOverflow(by: blockBytes) else {
            throw r.fail("tensor '\(name)' byte size overflows")
        }
        let offset = try r.read(UInt64.self, "the offset of tensor '\(name)'")
        guard offset <= UInt64(r.fileSize) else {
            throw r.fail("tensor '\(name)' offset \(offset) is outside the file (\(r.fileSize) bytes)")
        }
        guard Int(offset) % h.alignment == 0 else {
            throw r.fail("tensor '\(name)' offset \(offset) is not a multiple of the alignment \(h.alignment)")
        }
        infos.append((name, dims, type, Int(offset), bytes))
    }
    r.align(to: h.alignment)
    h.dataStart = r.position
    let dataSize = r.fileSize - h.dataStart  // may be negative when there is no data at all
    for t in infos {
        guard t.bytes <= dataSize - t.offset || t.bytes == 0 && t.offset <= Swift.max(dataSize, 0) else {
            throw r.fail("tensor '\(t.name)' data [\(t.offset), \(t.offset + t.bytes)) extends past the end of the data section (\(Swift.max(dataSize, 0)) bytes from byte \(h.dataStart))")
        }
        h.tensors.append(GGUFTensorInfo(name: t.name, dimensions: t.dims, type: t.type, dataOffset: t.offset,
                                        offset: h.dataStart + t.offset, byteCount: t.bytes))
    }
    // No two tensors may share a byte.
    let sorted = h.tensors.filter { $0.byteCount > 0 }.sorted { $0.dataOffset < $1.dataOffset }
    if var furthest = sorted.first {
        for t in sorted.dropFirst() {
            if t.dataOffset < furthest.dataOffset + furthest.byteCount {
                throw r.fail("tensors '\(furthest.name)' and '\(t.name)' overlap")
            }
            if t.dataOffset + t.byteCount > furthest.dataOffset + furthest.byteCount { furthest = t }
        }
    }
    return h
}

/// The smallest encoding of one value of `type` (to bound an array's count by the file size).
private func minimumBytes(_ type: GGUFValueType) -> Int {
    switch type {
    case .uint8, .int8, .bool: return 1
    case .uint16, .int16: return 2
    case .uint32, .int32, .float32: return 4
    case .uint64, .int64, .float64, .string: return 8
    case .array: return 12
    }
}

private func readValue(_ r: inout GGUFHeaderReader, _ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
    let what = "the value of metadata key '\(key)'"
    switch type {
    case .uint8: return .uint8(try r.read(UInt8.self, what))
    case .int8: return .int8(try r.read(Int8.self, what))
    case .uint16: return .uint16(try r.read(UInt16.self, what))
    case .int16: return .int16(try r.read(Int16.self, what))
    case .uint32: return .uint32(try r.read(UInt32.self, what))
    case .int32: return .int32(try r.read(Int32.self, what))
    case .float32: return .float32(Float(bitPattern: try r.read(UInt32.self, what)))
    case .bool: return .bool(try r.read(UInt8.self, what) != 0)
    case .string: return .string(try r.string(what))
    case .uint64: return .uint64(try r.read(UInt64.self, what))
    case .int64: return .int64(try r.read(Int64.self, what))
    case .float64: return .float64(Double(bitPattern: try r.read(UInt64.self, what)))
    case .array:
        guard depth < GGUFFile.maxArrayDepth else {
            throw r.fail("metadata key '\(key)' nests arrays more than \(GGUFFile.maxArrayDepth) deep")
        }
        let at = r.position
        let rawType = try r.read(UInt32.self, "the element type of metadata key '\(key)'")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw r.fail("metadata key '\(key)' at byte \(at) is an array of unknown value type \(rawType)")
        }
        let count = try r.read(UInt64.self, "the length of metadata key '\(key)'")
        guard count <= UInt64(r.remaining / minimumBytes(elementType)) else {
            throw r.fail("metadata key '\(key)' has \(count) \(elementType.name) elements, more than the \(r.remaining) bytes left in the file can hold")
        }
        if count > 1 << 16 {
            try MemoryLimit.check(Double(count) * Double(MemoryLayout<GGUFValue>.stride), "\(r.path): metadata key '\(key)'")
        }
        var items: [GGUFValue] = []
        items.reserveCapacity(Int(count))
        for _ in 0..<Int(count) { items.append(try readValue(&r, elementType, key: key, depth: depth + 1)) }
        return .array(elementType, items)
    }
}

private extension String {
    /// The 4 bytes of a little-endian u32 as printable text, e.g. `'GGUF'` or `0x00000000`.
    init(format4 word: UInt32) {
        let bytes = (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) }
        if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            self = "'" + String(decoding: bytes, as: UTF8.self) + "'"
        } else {
            self = "0x" + bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
    }
}
