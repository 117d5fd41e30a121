import ArgumentParser

/// Benchmarks and test workloads for the Strata block store.
@main
struct StrataBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata-bench",
        abstract: "Measure the Strata block store and its peer transport.",
        subcommands: [StoreBenchmarkCommand.self, DeltaBenchmarkCommand.self, CrashWorkerCommand.self, RemoteIOBenchmarkCommand.self],
        defaultSubcommand: StoreBenchmarkCommand.self
    )
}
