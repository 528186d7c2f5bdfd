import CDPOHeader
import DPO

/// A failed export: the status it returns and the message that names the argument and the value.
struct APIError: Error {
    let status: dpo_status
    let message: String

    static func invalid(_ message: String) -> APIError { APIError(status: DPO_ERR_INVALID_ARGUMENT, message: message) }
    static func tooSmall(_ message: String) -> APIError { APIError(status: DPO_ERR_BUFFER_TOO_SMALL, message: message) }
    static func outOfMemory(_ message: String) -> APIError { APIError(status: DPO_ERR_OUT_OF_MEMORY, message: message) }
    static func wrongState(_ message: String) -> APIError { APIError(status: DPO_ERR_WRONG_STATE, message: message) }
    static func `internal`(_ message: String) -> APIError { APIError(status: DPO_ERR_INTERNAL, message: message) }

    /// Any error thrown below an export, as a status: the engine's `DPOError` cases map one to
    /// one; anything else is a bug (internal).
    init(_ error: Error) {
        if let e = error as? APIError {
            self = e
            return
        }
        guard let e = error as? DPOError else {
            self = .internal("unexpected error: \(error)")
            return
        }
        switch e {
        case .invalidArgument(let m): self.init(status: DPO_ERR_INVALID_ARGUMENT, message: m)
        case .io(let m): self.init(status: DPO_ERR_IO, message: m)
        case .format(let m): self.init(status: DPO_ERR_FORMAT, message: m)
        case .outOfMemory(let m): self.init(status: DPO_ERR_OUT_OF_MEMORY, message: m)
        case .numeric(let m): self.init(status: DPO_ERR_NUMERIC, message: m)
        case .wrongState(let m): self.init(status: DPO_ERR_WRONG_STATE, message: m)
        case .internal(let m): self.init(status: DPO_ERR_INTERNAL, message: m)
        }
    }

    init(status: dpo_status, message: String) {
        self.status = status
        self.message = message
    }
}

let libraryVersion = DPO_VERSION_STRING

/// The static text of a status code.
func statusText(_ s: dpo_status) -> String {
    switch s {
    case DPO_OK: return "ok"
    case DPO_ERR_INVALID_ARGUMENT: return "invalid argument"
    case DPO_ERR_IO: return "I/O error"
    case DPO_ERR_FORMAT: return "format error"
    case DPO_ERR_OUT_OF_MEMORY: return "out of memory"
    case DPO_ERR_NUMERIC: return "numeric error"
    case DPO_ERR_WRONG_STATE: return "wrong state"
    case DPO_ERR_INTERNAL: return "internal error"
    case DPO_ERR_BUFFER_TOO_SMALL: return "buffer too small"
    default: return "unknown status"
    }
}
