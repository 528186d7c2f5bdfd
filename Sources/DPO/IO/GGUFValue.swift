/// Metadata values of a GGUF file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
/// the thirteen value types of the format, arrays included (an array holds values of one type,
/// possibly arrays again). The reader (GGUFReader.swift), the writer (GGUFWriter.swift) and the
/// tokenizer's GGUF loader share this type.

/// The on-disk type codes of GGUF metadata values (`gguf_metadata_value_type`).
public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// The name gguf-py gives the type (`GGUFValueType.UINT32` -> "UINT32"), for error messages.
    public var name: String { String(describing: self).uppercased() }
}

/// One metadata value. `array` carries its element type so that an empty array still writes back
/// with the type it was read with.
public indirect enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFValueType, [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        case .array: return .array
        }
    }

    /// The value as an `Int` if it is an integer of any width that fits.
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a `Double` if it is a number (integer or float).
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    public var bool: Bool? { if case .bool(let v) = self { return v } else { return nil } }
    public var string: String? { if case .string(let v) = self { return v } else { return nil } }
    public var array: [GGUFValue]? { if case .array(_, let v) = self { return v } else { return nil } }

    /// The elements as strings if this is an array of strings.
    public var strings: [String]? {
        guard case .array(.string, let items) = self else { return nil }
        return items.map { $0.string ?? "" }
    }
}

/// The metadata of a GGUF file in file order, with lookup by key (equality ignores the order).
public typealias GGUFMetadata = OrderedMap<GGUFValue>

extension GGUFValueType {
    /// Every type by its `name` ("UINT32" -> .uint32).
    public static let allNames: [String: GGUFValueType] = {
        var names: [String: GGUFValueType] = [:]
        for raw in UInt32(0)...12 { if let t = GGUFValueType(rawValue: raw) { names[t.name] = t } }
        return names
    }()
}
