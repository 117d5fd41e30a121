import BlockStore
import Foundation

/// Clone creation: latency as the number of clones of one snapshot grows, bytes on disk per
/// clone, and whether the source's size matters (1 GiB against 1 TiB).
struct CloneBenchmark {
    let directory: String
    let options: StoreOptions
    let checkpoints: [Int]
    let probes: Int
    let sizeComparisonClones: Int

    func run(into report: Report) throws {
        report.section("Clone creation (one snapshot, latency at N existing clones)")
        let storePath = directory + "/clones"
        var store = try BlockStore(directory: storePath, options: options)
        let golden = try store.createVolume(name: "golden", size: 1 << 30)
        let handle = try store.open(volumeID: golden.id)
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        fillRandom(chunk, seed: 1)
        for megabyte in stride(from: 0, to: 1024, by: 64) { try handle.write(UnsafeRawBufferPointer(chunk), at: UInt64(megabyte) << 20) }
        try handle.close()
        let snapshot = try store.createSnapshot(name: "golden-snap", of: golden.id)
        store.close()
        let usageBefore = diskUsage(of: storePath)
        store = try BlockStore(directory: storePath, options: options)

        var created = 0
        var all: [Double] = []
        func createClone() throws -> Double {
            let seconds = try measure {
                _ = try store.createVolume(name: "clone-\(created)", size: 1 << 30, source: .snapshot(id: snapshot.id))
            }
            created += 1
            all.append(seconds * 1000)
            return seconds * 1000
        }
        for checkpoint in checkpoints {
            while created < checkpoint - 1 { _ = try createClone() }
            var latencies: [Double] = []
            for _ in 0..<probes { latencies.append(try createClone()) }
            report.add("clone_p50_ms_at_\(checkpoint)", percentile(latencies, 0.5), "ms", "clone #\(checkpoint): p50 (\(probes) clones)")
            report.add("clone_p99_ms_at_\(checkpoint)", percentile(latencies, 0.99), "ms", "clone #\(checkpoint): p99")
        }
        report.add("clone_all_p50_ms", percentile(all, 0.5), "ms", "all \(all.count) clones: p50")
        report.add("clone_all_p99_ms", percentile(all, 0.99), "ms", "all clones: p99")
        report.add("clone_all_p999_ms", percentile(all, 0.999), "ms", "all clones: p99.9")
        report.add("clone_all_max_ms", all.max(), "ms", "all clones: max")
        store.close()
        let usageAfter = diskUsage(of: storePath)
        let perClone = Double(usageAfter) - Double(usageBefore)
        report.add("clone_disk_bytes", perClone / Double(created), "bytes", "disk per unwritten clone (\(created) clones, catalog included)")

        let reopenSeconds = try measure { store = try BlockStore(directory: storePath, options: options) }
        report.add("store_open_ms_with_clones", reopenSeconds * 1000, "ms", "open + reconcile with \(created) clones")
        let probe = try store.volume(named: "clone-0")!
        let before = diskUsage(of: storePath + "/layers")
        try store.open(volumeID: probe.id).close()
        report.add("clone_opened_disk_bytes", Double(diskUsage(of: storePath + "/layers") - before), "bytes",
                   "disk of a clone once opened (empty data file + map header)")
        store.close()
        try? FileManager.default.removeItem(atPath: storePath)
        try compareSourceSizes(into: report)
    }

    /// The same clone of a 1 GiB and of a 1 TiB volume, alternated so both see the same machine.
    private func compareSourceSizes(into report: Report) throws {
        report.section("Clone time against source size")
        let storePath = directory + "/sizes"
        let store = try BlockStore(directory: storePath, options: options)
        defer {
            store.close()
            try? FileManager.default.removeItem(atPath: storePath)
        }
        var snapshots: [UInt64: String] = [:]
        for size in [UInt64(1) << 30, UInt64(1) << 40] {
            let volume = try store.createVolume(name: "source-\(size)", size: size)
            let handle = try store.open(volumeID: volume.id)
            try [UInt8](repeating: 7, count: 4096).withUnsafeBytes { try handle.write($0, at: size - 4096) }
            try handle.close()
            snapshots[size] = try store.createSnapshot(name: "snap-\(size)", of: volume.id).id
        }
        var times: [UInt64: [Double]] = [:]
        for number in 0..<sizeComparisonClones {
            for size in [UInt64(1) << 30, UInt64(1) << 40] {
                let seconds = try measure {
                    _ = try store.createVolume(name: "c-\(size)-\(number)", size: size, source: .snapshot(id: snapshots[size]!))
                }
                times[size, default: []].append(seconds * 1000)
            }
        }
        let small = percentile(times[1 << 30]!, 0.5)
        let large = percentile(times[1 << 40]!, 0.5)
        report.add("clone_p50_ms_1gib", small, "ms", "clone of a 1 GiB volume: p50 (\(sizeComparisonClones))")
        report.add("clone_p50_ms_1tib", large, "ms", "clone of a 1 TiB volume: p50")
        report.add("clone_1tib_over_1gib", large / small, "x", "1 TiB clone time / 1 GiB clone time")
    }
}
