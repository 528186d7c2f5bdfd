/// Checks of host-supplied pointers, structs, strings and numbers. Each error names the argument
/// (or field) and the value.

/// `p`, or an error naming `argument` when it is NULL.
func required<T>(_ p: T?, _ argument: String) throws -> T {
    guard let p else { throw APIError.invalid("\(argument) is NULL") }
    return p
}

/// Checks a struct's leading `size_t struct_size` equals this library's `sizeof`, reading only
/// that field first so a smaller (older) struct is never over-read.
func checkStructSize<T>(_ p: UnsafeRawPointer, _ type: T.Type, _ argument: String) throws {
    let declared = p.load(as: Int.self)
    let expected = MemoryLayout<T>.size
    if declared != expected {
        throw APIError.invalid("\(argument)->struct_size = \(declared), but this library's \(T.self) has size \(expected) (set struct_size = sizeof(\(T.self)); the header and the library must be the same version)")
    }
}

/// The struct behind an input pointer, after the NULL and struct_size checks.
func readStruct<T>(_ p: UnsafePointer<T>?, _ argument: String) throws -> T {
    let p = try required(p, argument)
    try checkStructSize(UnsafeRawPointer(p), T.self, argument)
    return p.pointee
}

/// An output struct pointer, after the NULL and struct_size checks.
func outputStruct<T>(_ p: UnsafeMutablePointer<T>?, _ argument: String) throws -> UnsafeMutablePointer<T> {
    let p = try required(p, argument)
    try checkStructSize(UnsafeRawPointer(p), T.self, argument)
    return p
}

/// A required NUL-terminated string argument.
func readString(_ p: UnsafePointer<CChar>?, _ argument: String) throws -> String {
    String(cString: try required(p, argument))
}

/// An optional string field: NULL gives nil (the default).
func optionalString(_ p: UnsafePointer<CChar>?) -> String? {
    p.map { String(cString: $0) }
}

/// An integer argument in `range`, as Int.
func checkedInt(_ v: Int64, _ argument: String, _ range: ClosedRange<Int64>) throws -> Int {
    guard range.contains(v) else {
        throw APIError.invalid("\(argument) = \(v) is out of range [\(range.lowerBound), \(range.upperBound)]")
    }
    return Int(v)
}

/// The largest count or step number the library accepts (keeps every later computation on it,
/// including conversions through Double, exact and overflow-free).
let maxCount: Int64 = 1 << 40

/// A 0/1 flag field.
func readFlag(_ v: Int32, _ argument: String) throws -> Bool {
    guard v == 0 || v == 1 else { throw APIError.invalid("\(argument) = \(v) must be 0 or 1") }
    return v == 1
}

/// A finite double field.
func finite(_ v: Double, _ argument: String) throws -> Double {
    guard v.isFinite else { throw APIError.invalid("\(argument) = \(v) is not a finite number") }
    return v
}

/// Copies `text` NUL-terminated into a caller buffer of `capacity` bytes, reporting the size
/// needed (with the NUL) through `needed`; a too-small buffer is refused and left untouched.
func writeText(_ text: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt,
               _ needed: UnsafeMutablePointer<UInt>?, _ argument: String) throws {
    let bytes = Array(text.utf8)
    needed?.pointee = UInt(bytes.count + 1)
    if capacity < UInt(bytes.count + 1) {
        throw APIError.tooSmall("\(argument): capacity \(capacity) is too small, \(bytes.count + 1) bytes are needed")
    }
    let out = try required(buffer, argument)
    for (i, b) in bytes.enumerated() { out[i] = CChar(bitPattern: b) }
    out[bytes.count] = 0
}
