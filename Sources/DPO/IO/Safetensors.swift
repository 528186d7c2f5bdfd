// Reader and writer for the safetensors format:
//
//     [8 bytes] N, the header length, a little-endian UInt64
//     [N bytes] a JSON object: {"__metadata__": {str: str}, "<name>": {"dtype": "F32",
//               "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
//     [rest]    the data section; offsets are relative to its start
//
// `SafetensorsFile.open` reads and validates the whole header up front, so any later read is
// within the file as it was when opened. Tensor data is read on demand with pread(2), so
// opening a multi-gigabyte checkpoint costs only its header.
//
// This code assumes a little-endian host (x86-64, arm64): tensor bytes, which safetensors stores
// little-endian, are used in place without byte swapping.

import Glibc

#if _endian(big)
#error("swift-dpo's safetensors I/O assumes a little-endian host")
#endif

/// The element types of the safetensors format, by their header names.
/// Only `F32`, `F16` and `BF16` can be loaded as `Float`. Sub-byte types (F4, F6_*) are not supported.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0
    case I16, U16, F16, BF16
    case I32, U32, F32
    case I64, U64, F64, C64

    /// The size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0: return 1
        case .I16, .U16, .F16, .BF16: return 2
        case .I32, .U32, .F32: return 4
        case .I64, .U64, .F64, .C64: return 8
        }
    }

    /// Whether `SafetensorsFile.readFloats` can convert this type to `Float`.
    public var isLoadableAsFloat: Bool {
        self == .F32 || self == .F16 || self == .BF16
    }
}

/// One tensor's header entry, validated.
public struct SafetensorsTensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// The tensor's bytes, relative to the start of the data section.
    public let byteRange: Range<Int>

    /// The number of elements (1 for a scalar of shape []).
    public var count: Int { shape.reduce(1, *) }
}

/// An open safetensors file whose header has been fully validated.
public final class SafetensorsFile: Sendable {
    /// The limit on the header length, as in the reference implementation.
    public static let maxHeaderLength = 100_000_000

    /// The path the file was opened with.
    public let path: String
    /// The header's `__metadata__` (empty if absent).
    public let metadata: [String: String]
    /// The tensor names in header order.
    public let tensorNames: [String]

    private let fd: Int32
    private let dataStart: Int
    private let tensors: [String: SafetensorsTensorInfo]

    private init(path: String, fd: Int32, dataStart: Int, metadata: [String: String],
                 tensorNames: [String], tensors: [String: SafetensorsTensorInfo]) {
        self.path = path
        self.fd = fd
        self.dataStart = dataStart
        self.metadata = metadata
        self.tensorNames = tensorNames
        self.tensors = tensors
    }

    deinit { close(fd) }

    /// Opens `path` and validates its header completely: a malformed file throws `DPOError.format`
    /// naming the file (and tensor), an unreadable one `DPOError.io`.
    public static func open(_ path: String) throws -> SafetensorsFile {
        let fd = try openFile(path, O_RDONLY)
        do {
            let size = try fileSize(fd, path: path)
            guard size >= 8 else {
                throw DPOError.format("\(path): file is \(size) bytes, too short for a safetensors header")
            }
            var lengthField: UInt64 = 0
            try withUnsafeMutableBytes(of: &lengthField) { try preadFully(fd, $0, offset: 0, path: path) }
            let headerLength = UInt64(littleEndian: lengthField)
            guard headerLength <= UInt64(maxHeaderLength) else {
                throw DPOError.format("\(path): header length \(headerLength) exceeds the limit of \(maxHeaderLength) bytes")
            }
            guard 8 + Int(headerLength) <= size else {
                throw DPOError.format("\(path): header length \(headerLength) exceeds file size \(size)")
            }
            var header = [UInt8](repeating: 0, count: Int(headerLength))
            try header.withUnsafeMutableBytes { try preadFully(fd, $0, offset: 8, path: path) }
            let dataStart = 8 + Int(headerLength)
            let parsed = try parseHeader(header, dataSize: size - dataStart, path: path)
            return SafetensorsFile(path: path, fd: fd, dataStart: dataStart, metadata: parsed.metadata,
                                   tensorNames: parsed.names, tensors: parsed.tensors)
        } catch {
            close(fd)
            throw error
        }
    }

    /// The header entry of tensor `name`, or nil if there is none.
    public func info(_ name: String) -> SafetensorsTensorInfo? {
        tensors[name]
    }

    /// Reads tensor `name` into `destination`, converting F32, F16 or BF16 to `Float` exactly.
    /// Throws if the tensor is missing, `destination.count` differs from its element count,
    /// or its dtype is not one of those three.
    public func readFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let info = tensors[name] else {
            throw DPOError.invalidArgument("\(path): no tensor named '\(name)'")
        }
        guard destination.count == info.count else {
            throw DPOError.invalidArgument(
                "\(path): tensor '\(name)' has \(info.count) elements, destination holds \(destination.count)")
        }
        let offset = dataStart + info.byteRange.lowerBound
        switch info.dtype {
        case .F32:
            try preadFully(fd, UnsafeMutableRawBufferPointer(destination), offset: offset, path: path)
        case .F16:
            try readHalves(offset: offset, into: destination, isBF16: false)
        case .BF16:
            try readHalves(offset: offset, into: destination, isBF16: true)
        default:
            throw DPOError.format(
                "\(path): tensor '\(name)' has dtype \(info.dtype.rawValue), which cannot be loaded as Float (only F32, F16, BF16)")
        }
    }

    /// Reads tensor `name` into a new array (see `readFloats(_:into:)`).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else {
            throw DPOError.invalidArgument("\(path): no tensor named '\(name)'")
        }
        return try [Float](unsafeUninitializedCapacity: info.count) { buffer, initialized in
            initialized = 0
            try readFloats(name, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<info.count]))
            initialized = info.count
        }
    }

    /// Reads F16 or BF16 elements in chunks through a scratch buffer and widens them to Float.
    private func readHalves(offset: Int, into destination: UnsafeMutableBufferPointer<Float>, isBF16: Bool) throws {
        let chunkSize = Swift.min(destination.count, 1 << 16)
        guard chunkSize > 0, let out = destination.baseAddress else { return }
        let scratch = UnsafeMutablePointer<UInt16>.allocate(capacity: chunkSize)
        defer { scratch.deallocate() }
        // Float and UInt32 have the same size and alignment; write bit patterns directly.
        let bits = UnsafeMutableRawPointer(out).assumingMemoryBound(to: UInt32.self)
        var done = 0
        while done < destination.count {
            let n = Swift.min(chunkSize, destination.count - done)
            try preadFully(fd, UnsafeMutableRawBufferPointer(start: scratch, count: 2 * n),
                           offset: offset + 2 * done, path: path)
            let dst = bits + done
            if isBF16 {
                for i in 0..<n { dst[i] = floatBits(fromBF16: scratch[i]) }
            } else {
                for i in 0..<n { dst[i] = floatBits(fromF16: scratch[i]) }
            }
            done += n
        }
    }
}

/// The Float bit pattern of a bfloat16 value (its upper 16 bits).
@inline(__always)
func floatBits(fromBF16 h: UInt16) -> UInt32 {
    UInt32(h) << 16
}

/// The Float bit pattern of an IEEE 754 binary16 value, exactly: normals, subnormals, ±0, ±inf,
/// and NaNs (payload kept in the top mantissa bits).
@inline(__always)
func floatBits(fromF16 h: UInt16) -> UInt32 {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1F
    let mantissa = UInt32(h & 0x3FF)
    switch exponent {
    case 0x1F:  // inf or NaN
        return sign | 0x7F80_0000 | (mantissa << 13)
    case 0:     // zero or subnormal: mantissa × 2^-24, exact in Float
        return sign | (Float(mantissa) * 0x1p-24).bitPattern
    default:    // normal: rebias the exponent from 15 to 127
        return sign | ((exponent + 112) << 23) | (mantissa << 13)
    }
}

// MARK: - Header validation

private struct ParsedHeader {
    var metadata: [String: String] = [:]
    var names: [String] = []
    var tensors: [String: SafetensorsTensorInfo] = [:]
}

private func parseHeader(_ header: [UInt8], dataSize: Int, path: String) throws -> ParsedHeader {
    func fail(_ message: String) -> DPOError { .format("\(path): \(message)") }

    let json: JSONValue
    do {
        json = try JSON.parse(header, uniqueKeys: true)
    } catch let error as DPOError {
        let reason = error.message.hasPrefix("invalid JSON: ") ? String(error.message.dropFirst(14)) : error.message
        throw fail("header is not valid JSON: \(reason)")
    }
    guard let object = json.object else { throw fail("header is not a JSON object") }

    var result = ParsedHeader()
    for key in object.keys {
        let value = object[key]!
        if key == "__metadata__" {
            guard let entries = value.object else { throw fail("'__metadata__' is not an object") }
            for metaKey in entries.keys {
                guard let text = entries[metaKey]!.string else {
                    throw fail("'__metadata__' value for '\(metaKey)' is not a string")
                }
                result.metadata[metaKey] = text
            }
            continue
        }
        let info = try parseTensorEntry(name: key, value, dataSize: dataSize, fail: fail)
        result.names.append(key)
        result.tensors[key] = info
    }
    try checkNoOverlap(result.names.map { result.tensors[$0]! }, fail: fail)
    return result
}

private func parseTensorEntry(name: String, _ value: JSONValue, dataSize: Int,
                              fail: (String) -> DPOError) throws -> SafetensorsTensorInfo {
    guard let entry = value.object else { throw fail("entry for tensor '\(name)' is not an object") }

    guard let dtypeName = entry["dtype"]?.string else {
        throw fail("tensor '\(name)' has a missing or non-string 'dtype'")
    }
    guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
        throw fail("unknown dtype '\(dtypeName)' for tensor '\(name)'")
    }

    guard let dims = entry["shape"]?.array else {
        throw fail("tensor '\(name)' has a missing or non-array 'shape'")
    }
    var shape: [Int] = []
    var count = 1
    for dim in dims {
        guard let d = dim.int else { throw fail("tensor '\(name)' has a non-integer dimension in 'shape'") }
        guard d >= 0 else { throw fail("tensor '\(name)' has a negative dimension \(d) in 'shape'") }
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow else { throw fail("tensor '\(name)' shape \(dims.compactMap(\.int)) overflows the element count") }
        shape.append(d)
        count = product
    }
    let (expectedBytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
    guard !overflow else { throw fail("tensor '\(name)' shape \(shape) overflows the byte count") }

    guard let offsets = entry["data_offsets"]?.array, offsets.count == 2,
          let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, begin <= end else {
        throw fail("tensor '\(name)' has invalid 'data_offsets' (expected [begin, end] with 0 <= begin <= end)")
    }
    guard end <= dataSize else {
        throw fail("tensor '\(name)' data [\(begin), \(end)) extends past end of data (size \(dataSize))")
    }
    guard end - begin == expectedBytes else {
        throw fail("tensor '\(name)' data length \(end - begin) bytes does not match shape \(shape) "
                   + "of \(dtype.rawValue) (\(expectedBytes) bytes)")
    }
    return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
}

/// Throws if any two non-empty tensors share a byte of the data section.
private func checkNoOverlap(_ infos: [SafetensorsTensorInfo], fail: (String) -> DPOError) throws {
    let sorted = infos.filter { !$0.byteRange.isEmpty }.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
    guard var furthest = sorted.first else { return }  // the range reaching furthest so far
    for info in sorted.dropFirst() {
        if info.byteRange.lowerBound < furthest.byteRange.upperBound {
            throw fail("tensors '\(furthest.name)' and '\(info.name)' overlap")
        }
        if info.byteRange.upperBound > furthest.byteRange.upperBound { furthest = info }
    }
}

// MARK: - Writer

/// Writes safetensors files.
public enum SafetensorsWriter {
    /// Writes F32 tensors to `path` atomically (see `writeFileAtomically`).
    ///
    /// Tensors are sorted by name (UTF-8 byte order) and laid out contiguously in that order, as the
    /// Python library does for tensors of one dtype. The header is compact JSON with `__metadata__`
    /// first (omitted when `metadata` is empty; keys sorted), padded with spaces to a multiple of 8 bytes.
    public static func write(_ path: String,
                             tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)],
                             metadata: [String: String]) throws {
        let sorted = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        var header = JSONObject()
        if !metadata.isEmpty {
            var meta = JSONObject()
            for key in metadata.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                meta[key] = .string(metadata[key]!)
            }
            header["__metadata__"] = .object(meta)
        }
        var offset = 0
        for tensor in sorted {
            try validate(tensor, existing: header, path: path)
            let bytes = tensor.data.count * SafetensorsDType.F32.byteSize
            header[tensor.name] = .object([
                "dtype": .string(SafetensorsDType.F32.rawValue),
                "shape": .array(tensor.shape.map { .number(Double($0)) }),
                "data_offsets": .array([.number(Double(offset)), .number(Double(offset + bytes))]),
            ])
            offset += bytes
        }
        var headerBytes = Array(JSON.serialize(.object(header), pretty: false).utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }

        try writeFileAtomically(path) { out in
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try out.write($0) }
            try out.write(headerBytes)
            for tensor in sorted { try out.write(UnsafeRawBufferPointer(tensor.data)) }
        }
    }

    private static func validate(_ tensor: (name: String, shape: [Int], data: UnsafeBufferPointer<Float>),
                                 existing header: JSONObject, path: String) throws {
        func fail(_ message: String) -> DPOError { .invalidArgument("cannot write '\(path)': \(message)") }
        if tensor.name.isEmpty { throw fail("empty tensor name") }
        if tensor.name == "__metadata__" { throw fail("'__metadata__' is not a valid tensor name") }
        if header[tensor.name] != nil { throw fail("duplicate tensor name '\(tensor.name)'") }
        var count = 1
        for d in tensor.shape {
            guard d >= 0 else { throw fail("tensor '\(tensor.name)' has a negative dimension \(d)") }
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("tensor '\(tensor.name)' shape \(tensor.shape) overflows") }
            count = product
        }
        guard count == tensor.data.count else {
            throw fail("tensor '\(tensor.name)' has shape \(tensor.shape) (\(count) elements) but \(tensor.data.count) values")
        }
    }
}
