import CDPOHeader

/// One export call: the handle whose message records a failure, and the objects marked busy for
/// the call's duration.
final class CallContext {
    fileprivate var owner: HandleObject?
    fileprivate var held: [HandleObject] = []

    /// The live object behind `handle`, marked busy (with the models it uses) for this call. The
    /// first handle used becomes the call's owner: its message is reset now and set on failure.
    func use<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type, _ argument: String) throws -> T {
        let (object, all) = try Registry.acquire(handle, type, argument)
        held += all
        if owner == nil {
            owner = object
            object.message.clear()
        }
        return object
    }

    /// Like `use` for an optional handle argument: NULL gives nil.
    func useOptional<T: HandleObject>(_ handle: OpaquePointer?, _ type: T.Type, _ argument: String) throws -> T? {
        handle == nil ? nil : try use(handle, type, argument)
    }
}

/// Runs the body of the export `function`: resets the thread's message, maps any error to its
/// status and records "function: message" per thread and on the owner handle. The body never
/// traps on host data (it validates first), so this is the only way out of an export.
func exportCall(_ function: String, _ body: (CallContext) throws -> Void) -> dpo_status {
    ThreadMessage.clear()
    let context = CallContext()
    defer { Registry.release(context.held) }
    do {
        try body(context)
        ThreadMessage.clear()  // a call made from a host callback during this one may have set it
        return DPO_OK
    } catch {
        let e = APIError(error)
        let message = "\(function): \(e.message)"
        ThreadMessage.set(message)
        context.owner?.message.set(message)
        return e.status
    }
}
