import COpenBLAS
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The library's thread count: used by `parallelFor` for non-GEMM loops and handed to OpenBLAS for
/// matrix products, so one setting controls both (default: all online cores).
public enum Threads {
    nonisolated(unsafe) private static var current: Int = {
        let n = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return max(1, n)
    }()

    public static var count: Int { current }

    /// Sets the thread count for swift-dpo's loops and OpenBLAS (values below 1 become 1). The
    /// first call also shortens OpenBLAS's idle spin (see OpenBLASThreads.swift), which briefly
    /// sets an environment variable. These are the only process-wide changes swift-dpo makes, and
    /// only here: computations never touch OpenBLAS's settings or the environment.
    /// Not thread-safe with respect to running computations: call it between steps (and, the first
    /// time, before other threads read the environment, e.g. at start-up).
    public static func setCount(_ n: Int) {
        _ = openBLASIdleSpinShortened
        current = max(1, min(n, 1024))
        openblas_set_num_threads(Int32(current))
    }
}

/// Runs `body` over `0..<n` split into contiguous ranges across `Threads.count` threads. Ranges are
/// at least `grain` items so that tiny loops stay on the calling thread.
@inline(__always)
func parallelFor(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
    if n <= 0 { return }
    let threads = min(Threads.count, max(1, n / max(grain, 1)))
    if threads <= 1 {
        body(0..<n)
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: threads) { chunk in
            let lo = n * chunk / threads
            let hi = n * (chunk + 1) / threads
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// Workers `parallelTasks` uses for `count` tasks.
func taskWorkers(_ count: Int) -> Int { min(Threads.count, count) }

/// Runs tasks `0..<count` on up to `Threads.count` workers: `body(worker, task)`, worker in
/// `0..<workers` (index per-worker scratch with it). Each worker takes the next task from a shared
/// counter, so tasks of unequal cost balance themselves (list the costly ones first).
///
/// The tasks may call sgemm concurrently; use `sgemmOnCallingThread` there, which keeps each
/// product on its worker's thread. OpenBLAS's thread count is left alone: switching it to 1 around
/// the tasks, as this once did, is a process-wide change that races with other threads'
/// computations (e.g. a second trainer's) and with the host's own OpenBLAS calls.
func parallelTasks(_ count: Int, _ body: (_ worker: Int, _ task: Int) -> Void) {
    if count <= 0 { return }
    let workers = taskWorkers(count)
    if workers == 1 {
        for task in 0..<count { body(0, task) }
        return
    }
    let next = Atomic<Int>(0)
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            while true {
                let task = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if task >= count { break }
                body(worker, task)
            }
        }
    }
}
