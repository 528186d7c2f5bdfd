#if canImport(Glibc)
import Glibc
#endif

/// How much memory this process may still allocate, and the check every large allocation of the
/// engine passes first. An allocation the system cannot satisfy would otherwise end the process
/// (Swift traps when an allocation fails; Linux's overcommit lets it succeed and the OOM killer
/// ends the process later). The limit is the smallest of:
///   - the machine's physical memory;
///   - the address-space limit (`ulimit -v`, RLIMIT_AS) minus the address space in use now;
///   - the cgroup's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) minus its usage now.
/// It is an upper bound, not a promise (other processes use memory too); its job is to turn a
/// request that cannot fit into `DPOError.outOfMemory` before anything is allocated.
public enum MemoryLimit {
    /// Bytes this process may still allocate by the three limits above.
    public static func availableBytes() -> Double {
        var limit = physicalBytes()
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &rl) == 0 && rl.rlim_cur != rlim_t.max {  // RLIM_INFINITY
            limit = min(limit, Double(rl.rlim_cur) - addressSpaceInUse())
        }
        if let (max, used) = cgroupLimit() { limit = min(limit, max - used) }
        // Headroom for what is allocated beside the checked buffers: OpenBLAS's per-thread
        // buffers (it hangs, not fails, when it cannot map them), small arrays, thread stacks.
        limit -= Double(reserveMiB + reserveMiBPerThread * Threads.count) * Double(1 << 20)
        return Swift.max(limit, 0)
    }

    /// MiB kept free of the checks (see `availableBytes`).
    static let reserveMiB = 128, reserveMiBPerThread = 64

    /// Throws `DPOError.outOfMemory` naming `what` when `bytes` (computed in Double, so no size can
    /// overflow) exceed `availableBytes()`.
    public static func check(_ bytes: Double, _ what: String) throws {
        let available = availableBytes()
        if !(bytes <= available) {
            throw DPOError.outOfMemory("\(what) needs about \(text(bytes)), more than the \(text(available)) this process may still allocate")
        }
    }

    /// What a batch costs per token before its activations (which `Workspace` checks itself): the
    /// token lists copied from the caller, the packed stream (ids, positions), head rows, labels
    /// and per-row outputs, with room for array growth.
    public static let batchBytesPerToken = 128.0

    /// Throws `DPOError.outOfMemory` when a batch of `tokens` tokens cannot even be packed. Batches
    /// under 2^19 tokens (64 MiB) pass without reading the limits (the command line checks every
    /// data row this way).
    public static func checkBatch(tokens: Int, _ what: String) throws {
        if tokens < 1 << 19 { return }
        try check(Double(tokens) * batchBytesPerToken, "packing the \(tokens) tokens of \(what)")
    }

    /// Bytes as "1.5 GiB" or "12.0 MiB".
    static func text(_ bytes: Double) -> String {
        guard bytes.isFinite else { return "\(bytes) bytes" }
        let gib = bytes / Double(1 << 30)
        if gib >= 1 { return "\((gib * 10).rounded() / 10) GiB" }
        return "\((bytes / Double(1 << 20) * 10).rounded() / 10) MiB"
    }

    static func physicalBytes() -> Double {
        let pages = Double(sysconf(Int32(_SC_PHYS_PAGES))), size = Double(sysconf(Int32(_SC_PAGESIZE)))
        return pages > 0 && size > 0 ? pages * size : 0x1p62
    }

    /// The process's current virtual size (first field of /proc/self/statm, in pages).
    static func addressSpaceInUse() -> Double {
        guard let text = smallProcFile("/proc/self/statm"),
              let pages = Double(text.split(separator: " ").first ?? "") else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// (limit, usage) of the process's memory cgroup, if it has a limit.
    static func cgroupLimit() -> (Double, Double)? {
        // cgroup v2: "0::/path" in /proc/self/cgroup; v1: a "memory" controller line.
        guard let lines = smallProcFile("/proc/self/cgroup")?.split(separator: "\n") else { return nil }
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = String(parts[2])
            if parts[0] == "0" && parts[1].isEmpty {
                if let max = number("/sys/fs/cgroup\(path)/memory.max") ?? number("/sys/fs/cgroup/memory.max") {
                    let used = number("/sys/fs/cgroup\(path)/memory.current") ?? number("/sys/fs/cgroup/memory.current") ?? 0
                    return (max, used)
                }
            } else if parts[1].split(separator: ",").contains("memory") {
                for dir in ["/sys/fs/cgroup/memory\(path)", "/sys/fs/cgroup/memory"] {
                    if let max = number("\(dir)/memory.limit_in_bytes"), max < 0x1p60 {
                        return (max, number("\(dir)/memory.usage_in_bytes") ?? 0)
                    }
                }
            }
        }
        return nil
    }

    /// A number in a small kernel file ("max" and unreadable files give nil).
    private static func number(_ path: String) -> Double? {
        smallProcFile(path).flatMap { Double($0.split(separator: "\n").first ?? "") }
    }

    /// The first 4 KiB of a kernel file (proc and sysfs files report size 0, so no stat).
    private static func smallProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }
}
