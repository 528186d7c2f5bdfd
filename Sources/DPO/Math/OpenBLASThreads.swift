import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

// OpenBLAS's pthread server keeps its worker threads busy-waiting (a sched_yield loop) for 2^28
// cycles, about 0.1 s, after every multi-threaded call before they sleep. Between the matrix
// products of a training step swift-dpo runs its own parallel loops (norms, softmax, SwiGLU, the
// attention heads), and those spinning workers then compete with them for the cores: on the tiny
// benchmark shape perf showed about 15% of all samples in OpenBLAS's sched_yield loop, and the
// step took about 11% longer than with the short wait below.
// OPENBLAS_THREAD_TIMEOUT (log2 of the spin cycles, 4..30) shortens that wait, but OpenBLAS reads
// it only from the environment, when it starts its threads (at load time) or in its exported
// `openblas_read_env`. So, unless the user has set it, the first `Threads.setCount` (an explicit
// call: dpo_set_num_threads in the C library; the Python package and the `dpo` command make it at
// start-up) sets the variable, has OpenBLAS read it, removes it again and restarts OpenBLAS's
// thread server (`blas_thread_shutdown_`, `blas_thread_init`). Setting an environment variable
// races with any other thread reading the environment, so this never happens inside a computation:
// a library call that only computes changes no process-wide state.
// The functions are looked up at run time in the very library that provides
// `openblas_get_num_threads` (found with dladdr, so it works when libdpo.so is loaded RTLD_LOCAL,
// as by Python's ctypes); a BLAS without them (an OpenMP build, another vendor) is left as it is.

/// log2 of the cycles an idle OpenBLAS worker spins before it sleeps (OpenBLAS's minimum).
let idleSpinLog2 = 4

/// Evaluated once, by the first `Threads.setCount`; true when the timeout was applied.
let openBLASIdleSpinShortened: Bool = {
    guard getenv("OPENBLAS_THREAD_TIMEOUT") == nil else { return false }
    typealias Fn = @convention(c) () -> Void
    let known: @convention(c) () -> Int32 = openblas_get_num_threads
    var info = DPOLoadedObject()
    guard dpo_dladdr(unsafeBitCast(known, to: UnsafeRawPointer.self), &info) != 0, let file = info.fileName,
          let library = dlopen(file, RTLD_LAZY | RTLD_NOLOAD) else { return false }
    defer { dlclose(library) }
    guard let readEnv = dlsym(library, "openblas_read_env"),
          let shutdown = dlsym(library, "blas_thread_shutdown_"),
          let start = dlsym(library, "blas_thread_init") else { return false }
    setenv("OPENBLAS_THREAD_TIMEOUT", "\(idleSpinLog2)", 0)
    unsafeBitCast(readEnv, to: Fn.self)()
    unsetenv("OPENBLAS_THREAD_TIMEOUT")  // leave the host's environment as it was
    unsafeBitCast(shutdown, to: Fn.self)()
    unsafeBitCast(start, to: Fn.self)()
    return true
}()
