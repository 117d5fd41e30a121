import ArgumentParser
import BlockStore
import Foundation

/// `strata-bench delta`: changed-block listing between two snapshots of a 1 TiB volume and of a
/// 1 GiB volume with the same 100 MiB changed, side by side in one run, so the cost is seen to
/// follow the change and not the size.
struct DeltaBenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delta", abstract: "Benchmark changed-block listing (GetMetadataDelta) against volume size.")

    @Flag(help: "Print one JSON object instead of a table.") var json = false
    @Option(help: "Scratch directory (on the filesystem to measure); removed afterwards.") var dir: String?
    @Option(help: "Listings timed per case (the median is reported).") var rounds = 7

    func run() throws {
        let base = dir ?? NSTemporaryDirectory()
        let directory = (base as NSString).appendingPathComponent("strata-bench-delta-\(getpid())")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = StoreOptions(backgroundFlatten: false)
        options.logger.logLevel = .error
        let report = Report()
        let started = now()
        var medians: [String: Double] = [:]
        for layout in ["contiguous", "scattered"] {
            report.section("100 MiB changed between two snapshots, \(layout == "contiguous" ? "in one run" : "as 1,600 random 64 KiB clusters")")
            for (label, size) in [("1 GiB", UInt64(1) << 30), ("1 TiB", UInt64(1) << 40)] {
                let key = "\(layout)_\(label.replacingOccurrences(of: " ", with: "").lowercased())"
                let storeDirectory = directory + "/" + key
                let store = try BlockStore(directory: storeDirectory, options: options)
                defer { store.close() }
                let (baseID, targetID) = try prepare(store, size: size, layout: layout)
                var samples: [Double] = []
                var listing: ExtentListing?
                for _ in 0..<rounds {
                    samples.append(try measure { listing = try store.changedExtents(from: baseID, to: targetID) })
                }
                let listed = listing!.extents.reduce(UInt64(0)) { $0 + $1.length }
                guard listed == 100 << 20 else { throw BenchError("\(key): listed \(listed) bytes, not 100 MiB") }
                medians[key] = percentile(samples, 0.5)
                report.add("\(key)_ms", percentile(samples, 0.5) * 1000, "ms", "\(label) volume: delta listing, median")
                report.add("\(key)_extents", Double(listing!.extents.count), "", "\(label) volume: extents listed")
                let started = now()
                let allocated = try store.allocatedExtents(ofSnapshot: targetID)
                report.add("\(key)_allocated_ms", (now() - started) * 1000, "ms",
                           "\(label) volume: allocated listing (\(allocated.extents.count) extents)")
            }
            report.add("\(layout)_ratio", medians["\(layout)_1tib"]! / medians["\(layout)_1gib"]!, "×", "1 TiB over 1 GiB")
        }
        let elapsed = now() - started
        if json {
            print(try report.json(extra: ["rounds": rounds, "elapsed_s": (elapsed * 10).rounded() / 10]))
        } else {
            print(report.table())
            print(String(format: "\n(%d listings per case, %.1f s)", rounds, elapsed))
        }
    }

    /// A volume with 16 MiB written, snapshot, 100 MiB changed, snapshot.
    private func prepare(_ store: BlockStore, size: UInt64, layout: String) throws -> (String, String) {
        let volume = try store.createVolume(name: "v", size: size)
        let handle = try store.open(volumeID: volume.id)
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        for mebibyte in 0..<16 { try chunk.withUnsafeBytes { try handle.write($0, at: UInt64(mebibyte) << 20) } }
        try handle.flush()
        let base = try store.createSnapshot(name: "base", of: volume.id)
        let changed = [UInt8](repeating: 0x5A, count: 64 << 10)
        if layout == "contiguous" {
            let start = size / 2
            for cluster in 0..<1600 { try changed.withUnsafeBytes { try handle.write($0, at: start + UInt64(cluster) << 16) } }
        } else {
            var generator = SystemRandomNumberGenerator()
            var clusters = Set<UInt64>()
            while clusters.count < 1600 { clusters.insert(UInt64.random(in: 256..<(size >> 16), using: &generator)) }
            for cluster in clusters { try changed.withUnsafeBytes { try handle.write($0, at: cluster << 16) } }
        }
        try handle.flush()
        try handle.close()
        let target = try store.createSnapshot(name: "target", of: volume.id)
        return (base.id, target.id)
    }
}
