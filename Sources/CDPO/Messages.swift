#if canImport(Glibc)
import Glibc
#endif

/// The message of the last failure, kept per thread (`dpo_last_error`) in a pthread key whose
/// destructor frees it when the thread exits.
enum ThreadMessage {
    private static let key: pthread_key_t? = {
        var k = pthread_key_t()
        return pthread_key_create(&k, { p in free(p) }) == 0 ? k : nil
    }()

    /// Replaces the calling thread's message.
    static func set(_ message: String) {
        guard let key else { return }
        free(pthread_getspecific(key))
        pthread_setspecific(key, mallocCString(message))
    }

    /// Clears the calling thread's message (no allocation).
    static func clear() {
        guard let key, let old = pthread_getspecific(key) else { return }
        free(old)
        pthread_setspecific(key, nil)
    }

    /// The calling thread's message, "" if none. Valid until the thread's next `set`/`clear`.
    static var pointer: UnsafePointer<CChar> {
        guard let key, let p = pthread_getspecific(key) else { return staticEmpty }
        return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
    }
}

/// The message of the last failed call on one handle (`dpo_*_last_error`), freed with the handle.
final class MessageSlot {
    private var storage: UnsafeMutablePointer<CChar>?

    func set(_ message: String) {
        free(storage)
        storage = mallocCString(message)
    }

    func clear() {
        free(storage)
        storage = nil
    }

    var pointer: UnsafePointer<CChar> { storage.map { UnsafePointer($0) } ?? staticEmpty }

    deinit { free(storage) }
}
