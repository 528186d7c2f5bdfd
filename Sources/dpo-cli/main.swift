import ArgumentParser
import DPO
import Foundation

struct DPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dpo",
        abstract: "Direct Preference Optimization on the CPU.",
        version: "dpo \(swiftDPOVersion)",
        subcommands: [Demo.self, SFT.self, Train.self, Eval.self, Generate.self, Bench.self, BenchTokenizer.self])
}

// Start-up: OpenBLAS's thread count and idle spin, set once here (see Threads.setCount).
Threads.setCount(Threads.count)

/// Every error is one line on stderr and a non-zero exit (--help and --version print normally).
/// Under mpirun with several ranks, the line names the rank and MPI_Abort ends the whole job.
do {
    // The arguments as the bytes given: a path that is not UTF-8 keeps its bytes (SystemPath), where
    // CommandLine.arguments would have replaced them with U+FFFD.
    let arguments = (1..<Int(CommandLine.argc)).compactMap { CommandLine.unsafeArgv[$0].map { SystemPath.string(cString: $0) } }
    var command = try DPOCommand.parseAsRoot(arguments)
    try DataParallel.start(for: command)
    try command.run()
    DataParallel.finish()
} catch let e as CLIError {
    DataParallel.fail(e.description, code: 1)
} catch let e as DPOError {
    DataParallel.fail(e.description, code: 1)
} catch let e as ExitCode {
    // A deliberate status (e.g. 130 after Ctrl-C's checkpoint): data parallel, every rank stops so.
    DataParallel.finish()
    exit(e.rawValue)
} catch {
    let code = DPOCommand.exitCode(for: error)
    if code == .success { DPOCommand.exit(withError: error) }
    let message = DPOCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    DataParallel.fail("\(message) (see dpo --help)", code: code.rawValue)
}
