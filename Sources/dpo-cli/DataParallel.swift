import ArgumentParser
import DPO
import Foundation

/// `mpirun -np N dpo train|sft ...`: data-parallel training over MPI. The command loads MPI only
/// when a launcher started it with more than one rank (Open MPI's OMPI_COMM_WORLD_SIZE, or
/// PMI_SIZE of MPICH's hydra and Slurm), from libdpo_mpi.so (Sources/dpo-mpi/dpo_mpi.c, built by
/// `make mpi` with mpicc) beside the command or at $DPO_MPI_LIBRARY. A single process never loads
/// it, and libdpo.so never links MPI.
///
/// Failures: a rank that fails prints its error with its rank and calls MPI_Abort, which ends every
/// rank; a rank that dies is noticed by mpirun, which ends the others and names it. Either way the
/// job exits non-zero within seconds, and checkpoints (rank 0's, written beside their path and
/// renamed into place) are never half-written.
enum DataParallel {
    nonisolated(unsafe) private(set) static var communicator: MPICommunicator?
    /// Ranks of this run (1 without mpirun).
    static var size: Int { communicator?.size ?? 1 }
    /// Rank 0 prints, logs and saves; the others are silent.
    static var isPrimary: Bool { (communicator?.rank ?? 0) == 0 }

    /// The rank count the launcher gives this process, or nil when no launcher started it.
    static var launchedSize: Int? {
        let env = ProcessInfo.processInfo.environment
        for key in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
            if let v = env[key], let n = Int(v) { return n }
        }
        return nil
    }

    /// Before a command runs: under a launcher with more than one rank, MPI is initialized for the
    /// data-parallel commands and refused for the others (N copies would write the same files).
    static func start(for command: ParsableCommand) throws {
        guard let n = launchedSize, n > 1 else { return }
        guard command is Train || command is SFT else {
            throw CLIError("this command does not run data parallel: only `dpo train` and `dpo sft` do under mpirun (\(n) ranks launched); run it as one process")
        }
        communicator = try MPICommunicator(library: try library())
        // The ranks on this machine share its cores (--threads overrides).
        let env = ProcessInfo.processInfo.environment
        let local = (env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["MPI_LOCALNRANKS"]).flatMap { Int($0) } ?? 1
        if local > 1 { Threads.setCount(max(1, Threads.count / local)) }
    }

    /// After a command ran to its end: MPI_Finalize (it waits for every rank).
    static func finish() {
        guard let c = communicator else { return }
        communicator = nil
        c.finalize()
    }

    /// Prints a fatal error (naming the rank when there are several) and ends the process: under
    /// MPI with MPI_Abort, which ends every rank of the job.
    static func fail(_ message: String, code: Int32) -> Never {
        if let c = communicator {
            FileHandle.standardError.write("dpo: rank \(c.rank) of \(c.size): \(message)\n".data(using: .utf8)!)
            c.abort(code: code)
        }
        FileHandle.standardError.write("dpo: \(message)\n".data(using: .utf8)!)
        exit(code)
    }

    private static func library() throws -> String {
        if let path = ProcessInfo.processInfo.environment["DPO_MPI_LIBRARY"], !path.isEmpty { return path }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent + "/libdpo_mpi.so"
    }
}

/// Prints on rank 0 only (every line when there is one process).
func say(_ line: String) {
    if DataParallel.isPrimary { print(line) }
}

/// The engine's Communicator over MPI_COMM_WORLD, through libdpo_mpi.so. Counts the time spent in
/// the gradient allreduce (float buffers) and in the small per-batch gathers (double buffers).
final class MPICommunicator: Communicator {
    typealias Init = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<CChar>?, Int) -> Int32
    typealias ReduceFloat = @convention(c) (UnsafeMutablePointer<Float>?, Int64, UnsafeMutablePointer<CChar>?, Int) -> Int32
    typealias ReduceDouble = @convention(c) (UnsafeMutablePointer<Double>?, Int64, UnsafeMutablePointer<CChar>?, Int) -> Int32
    typealias Message = @convention(c) (UnsafeMutablePointer<CChar>?, Int) -> Int32
    typealias Abort = @convention(c) (Int32) -> Void

    let rank: Int, size: Int
    /// The MPI library's version line.
    let version: String
    private let reduceFloat: ReduceFloat, reduceDouble: ReduceDouble, abortJob: Abort, finalizeMPI: Message
    /// Seconds, calls and elements of the float (gradient) and double (gather) allreduces.
    private(set) var floatSeconds = 0.0, floatCalls = 0, floatElements = 0
    private(set) var doubleSeconds = 0.0, doubleCalls = 0

    init(library path: String) throws {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw CLIError("running under mpirun with several ranks needs the MPI shim \(path) (`make mpi` builds it with mpicc; or set DPO_MPI_LIBRARY): \(why)")
        }
        func symbol<F>(_ name: String, _ type: F.Type) throws -> F {
            guard let p = dlsym(handle, name) else { throw CLIError("\(path) has no function \(name): not swift-dpo's MPI shim") }
            return unsafeBitCast(p, to: type)
        }
        let initMPI = try symbol("dpo_mpi_init", Init.self)
        reduceFloat = try symbol("dpo_mpi_allreduce_float", ReduceFloat.self)
        reduceDouble = try symbol("dpo_mpi_allreduce_double", ReduceDouble.self)
        abortJob = try symbol("dpo_mpi_abort", Abort.self)
        finalizeMPI = try symbol("dpo_mpi_finalize", Message.self)
        let libraryVersion = try symbol("dpo_mpi_library_version", Message.self)
        var r: Int32 = 0, s: Int32 = 0
        var message = [CChar](repeating: 0, count: 1024)
        if initMPI(&r, &s, &message, message.count) != 0 { throw CLIError("MPI: \(String(cString: message))") }
        rank = Int(r); size = Int(s)
        // "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4"
        version = libraryVersion(&message, message.count) == 0
            ? String(cString: message).split(whereSeparator: { $0 == "," || $0 == "\n" }).first.map(String.init) ?? "MPI" : "MPI"
    }

    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        let t = now()
        var message = [CChar](repeating: 0, count: 1024)
        if reduceFloat(values.baseAddress, Int64(values.count), &message, message.count) != 0 {
            throw DPOError.io("rank \(rank) of \(size): \(String(cString: message))")
        }
        floatSeconds += now() - t; floatCalls += 1; floatElements += values.count
    }

    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        let t = now()
        var message = [CChar](repeating: 0, count: 1024)
        if reduceDouble(values.baseAddress, Int64(values.count), &message, message.count) != 0 {
            throw DPOError.io("rank \(rank) of \(size): \(String(cString: message))")
        }
        doubleSeconds += now() - t; doubleCalls += 1
    }

    func abort(code: Int32) -> Never {
        abortJob(code)
        exit(code)  // MPI_Abort does not return; in case an implementation does
    }

    func finalize() {
        var message = [CChar](repeating: 0, count: 1024)
        _ = finalizeMPI(&message, message.count)
    }

    /// One line for the end of a run: the time in the gradient allreduce and the gathers, per
    /// optimizer step, against the run's time (the rest is compute, and waiting for the slowest rank
    /// shows as allreduce time).
    func summary(steps: Int, seconds: Double) -> String {
        let per = Double(max(steps, 1))
        let mb = Double(floatElements) * 4 / Double(max(floatCalls, 1)) / 1e6
        return String(format: "data parallel: %d ranks (%@), %d steps in %.2f s: gradient allreduce %.3f s/step (%d x %.1f MB), batch gathers %.4f s/step (%d calls), compute and the rest %.3f s/step",
                      size, version as NSString, steps, seconds, floatSeconds / per, floatCalls, mb, doubleSeconds / per, doubleCalls,
                      (seconds - floatSeconds - doubleSeconds) / per)
    }
}
