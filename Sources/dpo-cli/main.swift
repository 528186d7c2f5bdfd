import ArgumentParser
import DPO

struct DPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dpo",
        abstract: "Direct Preference Optimization on the CPU.",
        subcommands: [Bench.self])
}

DPOCommand.main()
