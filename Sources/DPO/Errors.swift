/// Every failure the engine reports. The cases map one to one onto the C ABI's `dpo_status` codes,
/// and each carries a message that names the argument, the file or the tensor at fault.
public enum DPOError: Error, Equatable, CustomStringConvertible {
    /// A caller-supplied value is out of range, inconsistent or missing.
    case invalidArgument(String)
    /// A file could not be opened, read, written or renamed.
    case io(String)
    /// A file was read but its content is malformed (JSON, safetensors header, config fields).
    case format(String)
    /// An allocation the caller asked for is too large.
    case outOfMemory(String)
    /// A loss, gradient or input value is NaN or infinite.
    case numeric(String)
    /// The call is not valid in the object's current state.
    case wrongState(String)
    /// A broken internal invariant (a bug in swift-dpo).
    case `internal`(String)

    public var message: String {
        switch self {
        case .invalidArgument(let m), .io(let m), .format(let m), .outOfMemory(let m),
             .numeric(let m), .wrongState(let m), .internal(let m):
            return m
        }
    }

    public var description: String {
        switch self {
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .io(let m): return "I/O error: \(m)"
        case .format(let m): return "format error: \(m)"
        case .outOfMemory(let m): return "out of memory: \(m)"
        case .numeric(let m): return "numeric error: \(m)"
        case .wrongState(let m): return "wrong state: \(m)"
        case .internal(let m): return "internal error: \(m)"
        }
    }
}
