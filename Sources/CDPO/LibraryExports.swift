import CDPOHeader
import DPO

// Version, status texts, the per-thread message and the thread count.

@_cdecl("dpo_version")
public func dpo_version() -> UnsafePointer<CChar>? { StaticCString.get(libraryVersion) }

@_cdecl("dpo_abi_version")
public func dpo_abi_version() -> Int32 { DPO_ABI_VERSION }

@_cdecl("dpo_status_string")
public func dpo_status_string(_ status: dpo_status) -> UnsafePointer<CChar>? { StaticCString.get(statusText(status)) }

@_cdecl("dpo_last_error")
public func dpo_last_error() -> UnsafePointer<CChar>? { ThreadMessage.pointer }

@_cdecl("dpo_get_num_threads")
public func dpo_get_num_threads() -> Int32 { Int32(clamping: Threads.count) }

@_cdecl("dpo_set_num_threads")
public func dpo_set_num_threads(_ n: Int32) -> dpo_status {
    exportCall("dpo_set_num_threads") { _ in
        Threads.setCount(try checkedInt(Int64(n), "n", 1...1024))
    }
}
