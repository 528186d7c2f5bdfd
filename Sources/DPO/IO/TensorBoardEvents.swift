// The bytes of a TensorBoard event file, written by hand (no TensorFlow, no protobuf library).
//
// An event file is a sequence of TFRecords (TensorFlow's core/lib/io/record_writer.cc, TensorBoard's
// summary/writer/record_writer.py), each
//
//     uint64 length | uint32 masked CRC-32C of the 8 length bytes | data | uint32 masked CRC-32C of data
//
// little-endian, with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8 (mod 2^32; crc32c.h's
// Mask). Each record's data is one serialized `Event` (tensorboard/compat/proto/event.proto,
// summary.proto; proto3), of which swift-dpo writes these fields:
//
//     Event      { double wall_time = 1; int64 step = 2;
//                  oneof what { string file_version = 3; Summary summary = 5; SessionLog session_log = 7; } }
//     Summary    { repeated Value value = 1; }
//     Value      { string tag = 1; oneof value { float simple_value = 2; } }
//     SessionLog { SessionStatus status = 1; }   // enum SessionStatus { ...; START = 1; ... }
//
// Protobuf's wire format (protobuf.dev/programming-guides/encoding): each field is a key
// varint(field_number << 3 | wire_type) and its value: varint (0) for integers and enums, 8 bytes
// (1) for a double, 4 bytes (5) for a float, a varint length and the bytes (2) for strings and
// messages. As protobuf's own serializers do, fields go in field-number order and proto3 leaves
// out a zero `wall_time` or `step` (fields of a oneof are always written), so an event here is
// byte for byte what TensorBoard's Python writer makes of the same values.

/// TFRecord framing.
enum TFRecord {
    /// crc32c.h's `Mask`: a CRC stored next to the data it covers is masked, because the CRC of
    /// bytes that themselves contain CRCs is otherwise degenerate.
    static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    /// `data` as one record: length, its masked CRC-32C, the data, its masked CRC-32C.
    static func frame(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 16)
        let length = littleEndianBytes(UInt64(data.count))
        out += length
        out += littleEndianBytes(masked(CRC32C.checksum(length)))
        out += data
        out += littleEndianBytes(masked(CRC32C.checksum(data)))
        return out
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }
}

/// The few protobuf encodings an `Event` needs.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    private mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, _ wireType: UInt64) {
        varint(UInt64(field) << 3 | wireType)
    }

    /// An int64 or enum field (wire type 0); a negative value takes 10 bytes, as protobuf's.
    mutating func int64(_ field: Int, _ v: Int64) {
        key(field, 0)
        varint(UInt64(bitPattern: v))
    }

    mutating func double(_ field: Int, _ v: Double) {
        key(field, 1)
        bytes += TFRecord.littleEndianBytes(v.bitPattern)
    }

    mutating func float(_ field: Int, _ v: Float) {
        key(field, 5)
        bytes += TFRecord.littleEndianBytes(v.bitPattern)
    }

    /// A string (its UTF-8), bytes or an embedded message (wire type 2).
    mutating func lengthDelimited(_ field: Int, _ data: [UInt8]) {
        key(field, 2)
        varint(UInt64(data.count))
        bytes += data
    }
}

/// Serialized `Event` messages.
enum TensorBoardEvent {
    /// The fields every event starts with; proto3 leaves out zeros.
    private static func header(wallTime: Double, step: Int64) -> ProtobufWriter {
        var w = ProtobufWriter()
        if wallTime.bitPattern != 0 { w.double(1, wallTime) }
        if step != 0 { w.int64(2, step) }
        return w
    }

    /// The first event of a file: `file_version` "brain.Event:2" (TensorBoard's reader takes
    /// version 2 to mean that restarts are marked by `SessionLog.START`).
    static func fileVersion(wallTime: Double) -> [UInt8] {
        var w = header(wallTime: wallTime, step: 0)
        w.lengthDelimited(3, Array("brain.Event:2".utf8))
        return w.bytes
    }

    /// `session_log { status: START }` at `step`: TensorBoard's reader drops every event it has
    /// read before (from this file or earlier ones of the directory) whose step is >= `step`.
    static func sessionStart(wallTime: Double, step: Int64) -> [UInt8] {
        var log = ProtobufWriter()
        log.int64(1, 1)  // SessionLog.START
        var w = header(wallTime: wallTime, step: step)
        w.lengthDelimited(7, log.bytes)
        return w.bytes
    }

    /// One scalar: `summary { value { tag: tag, simple_value: value } }`.
    static func scalar(wallTime: Double, step: Int64, tag: String, value: Float) -> [UInt8] {
        var v = ProtobufWriter()
        v.lengthDelimited(1, Array(tag.utf8))
        v.float(2, value)
        var summary = ProtobufWriter()
        summary.lengthDelimited(1, v.bytes)
        var w = header(wallTime: wallTime, step: step)
        w.lengthDelimited(5, summary.bytes)
        return w.bytes
    }
}
