import DPO
#if canImport(Glibc)
import Glibc
#endif

/// What a handle refers to. The registry maps live handles to these objects; an object lives on
/// after its handle is freed while another object (a trainer) still refers to it.
class HandleObject {
    /// The C type name, for messages ("dpo_model").
    class var typeName: String { "handle" }
    /// Message of the last failed call on this handle.
    let message = MessageSlot()
    /// True while a call uses this object; read and written only under `Registry`'s lock.
    fileprivate var busy = false
    /// Objects a call on this handle also uses (a trainer's models); marked busy together.
    var dependencies: [HandleObject] { [] }
}

final class ModelObject: HandleObject {
    override class var typeName: String { "dpo_model" }
    let model: LlamaModel
    init(_ model: LlamaModel) { self.model = model }
}

/// The live handles. A handle is an opaque non-dereferenceable value built from a counter that
/// never repeats, so a freed handle can never alias a newer one; any value not in the table
/// (freed, foreign, of another type) is refused.
enum Registry {
    private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
        return m
    }()
    nonisolated(unsafe) private static var live: [UInt: HandleObject] = [:]
    nonisolated(unsafe) private static var lastID: UInt = 0

    private static func locked<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body()
    }

    /// Adds an object; returns its new handle.
    static func register(_ object: HandleObject) throws -> OpaquePointer {
        try locked {
            lastID += 1
            let value = 0x5D90_0000 &+ (lastID << 4)
            guard let handle = OpaquePointer(bitPattern: value) else { throw APIError.internal("handle space exhausted") }
            live[value] = object
            return handle
        }
    }

    private static func find<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type, _ argument: String) throws -> T {
        guard let handle else { throw APIError.invalid("\(argument) is NULL") }
        let key = UInt(bitPattern: handle)
        guard let object = live[key] as? T else {
            throw APIError.invalid("\(argument) = 0x\(String(key, radix: 16)) is not a live \(T.typeName) handle (freed, never created, or of another type)")
        }
        return object
    }

    /// The live object behind `handle` with its dependencies marked busy until `release`.
    static func acquire<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type, _ argument: String) throws -> (T, [HandleObject]) {
        try locked {
            let object = try find(handle, type, argument)
            let all = [object] + object.dependencies
            if all.contains(where: { $0.busy }) {
                throw APIError.wrongState("\(argument): the \(T.typeName) (or a model it uses) is in use by another call (on another thread, or one whose callback is running)")
            }
            for o in all { o.busy = true }
            return (object, all)
        }
    }

    static func release(_ objects: [HandleObject]) {
        if objects.isEmpty { return }
        locked { for o in objects { o.busy = false } }
    }

    /// Removes `handle` from the table (the object is released when nothing else refers to it).
    /// NULL is a no-op.
    static func remove<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type, _ argument: String) throws {
        guard handle != nil else { return }
        let removed: T = try locked {
            let object = try find(handle, type, argument)
            if object.busy { throw APIError.wrongState("\(argument): the \(T.typeName) is in use by another call (on another thread, or one whose callback is running)") }
            live[UInt(bitPattern: handle)] = nil
            return object
        }
        _ = removed  // released here, outside the lock
    }

    /// The live object behind `handle`, without marking it busy (for message getters).
    static func peek<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type) -> T? {
        locked { try? find(handle, type, "handle") }
    }
}
