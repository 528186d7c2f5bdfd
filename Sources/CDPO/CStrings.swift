import DPO
#if canImport(Glibc)
import Glibc
#endif

// C strings the library hands out: interned static ones and malloc'd copies.

/// NUL-terminated copies of strings the library hands out with static lifetime (status texts,
/// default names in params structs): each distinct string is copied once and never freed.
enum StaticCString {
    private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
        return m
    }()
    nonisolated(unsafe) private static var table: [String: UnsafePointer<CChar>] = [:]

    /// The process-lifetime copy of `s`.
    static func get(_ s: String) -> UnsafePointer<CChar> {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if let p = table[s] { return p }
        guard let p = mallocCString(s) else { return staticEmpty }
        table[s] = UnsafePointer(p)
        return UnsafePointer(p)
    }
}

/// A malloc'd NUL-terminated copy of `s`, or nil if allocation fails. Free with `free`.
func mallocCString(_ s: String) -> UnsafeMutablePointer<CChar>? {
    let bytes = Array(s.utf8)
    guard let raw = malloc(bytes.count + 1) else { return nil }
    let p = raw.bindMemory(to: CChar.self, capacity: bytes.count + 1)
    for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
    p[bytes.count] = 0
    return p
}

/// A process-lifetime empty C string.
let staticEmpty: UnsafePointer<CChar> = {
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    p.initialize(to: 0)
    return UnsafePointer(p)
}()

/// A required path argument, its bytes kept exactly as given (also when they are not UTF-8):
/// see DPO's SystemPath. (`String(cString:)` would replace invalid bytes with U+FFFD, so two
/// different paths could name one directory.)
func readPath(_ p: UnsafePointer<CChar>?, _ argument: String) throws -> String {
    SystemPath.string(cString: try required(p, argument))
}
