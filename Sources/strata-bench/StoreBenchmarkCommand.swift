import ArgumentParser
import BlockStore
import Foundation

/// `strata-bench store`: clone latency and size, reads through deep chains and copy-up writes,
/// each beside a plain-file baseline measured in the same run.
struct StoreBenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Benchmark the block store.")

    @Flag(help: "Smaller sizes and fewer samples; finishes within a minute.") var quick = false
    @Flag(help: "Print one JSON object instead of a table.") var json = false
    @Option(help: "Scratch directory (on the filesystem to measure); removed afterwards.") var dir: String?
    @Option(help: "Sections to run, comma-separated: clone, read, copyup (default: all).") var only: String?

    func run() throws {
        let base = dir ?? NSTemporaryDirectory()
        let directory = (base as NSString).appendingPathComponent("strata-bench-\(getpid())")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Deep chains are what is measured here: no background flatten.
        var options = StoreOptions(softChainDepthLimit: 1000, hardChainDepthLimit: 1000, backgroundFlatten: false)
        options.logger.logLevel = .error
        let report = Report()
        let started = now()
        let sections = Set((only ?? "clone,read,copyup").split(separator: ",").map(String.init))
        if sections.contains("clone") { try CloneBenchmark(
            directory: directory, options: options, checkpoints: [1, 100, 1000, 10_000],
            probes: quick ? 50 : 200, sizeComparisonClones: quick ? 30 : 100
        ).run(into: report) }
        if sections.contains("read") { try ReadBenchmark(
            directory: directory, options: options, datasetSize: quick ? 256 << 20 : 1 << 30,
            randomReads: quick ? 100_000 : 400_000, sequentialPasses: quick ? 2 : 3, rounds: quick ? 3 : 5
        ).run(into: report) }
        if sections.contains("copyup") { try CopyUpBenchmark(
            directory: directory, options: options, datasetSize: quick ? 256 << 20 : 1 << 30,
            writes: quick ? 3000 : 10_000, rounds: 3
        ).run(into: report) }
        let elapsed = now() - started
        if json {
            print(try report.json(extra: ["mode": quick ? "quick" : "full", "elapsed_s": (elapsed * 10).rounded() / 10]))
        } else {
            print(report.table())
            print(String(format: "\n(%@ run, %.1f s)", quick ? "quick" : "full", elapsed))
        }
    }
}
