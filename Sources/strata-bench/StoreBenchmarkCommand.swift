import ArgumentParser

struct StoreBenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Benchmark the block store.")

    @Flag(help: "Smaller sizes, finishes within a minute.") var quick = false
    @Flag(help: "Print one JSON object instead of a table.") var json = false

    func run() throws {
        print("not yet")
    }
}
