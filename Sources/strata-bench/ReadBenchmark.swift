import BlockStore
import Foundation

/// Reads through chains of 1, 16 and 64 layers against a plain sparse file holding the same
/// bytes, read the same way (pread, same offsets, same order).
///
/// Two layouts of the data in the chain:
/// - golden (the headline figures): the bottom layer holds everything, written like the plain
///   file; each later layer rewrites a random 1/256 of the clusters. Most reads resolve to the
///   bottom of the chain: what a naive walk of the chain would pay most for.
/// - scattered (worst case): every cluster lives in a layer picked at random, so at depth 64
///   nearly every neighbour comes from another file.
/// Before timing, every file's cached pages are dropped and everything is read once through each
/// reader in the same 1 MiB pattern (which also checks the bytes), so all start equally warm.
struct ReadBenchmark {
    let directory: String
    let options: StoreOptions
    let datasetSize: Int
    let randomReads: Int
    let sequentialPasses: Int
    let rounds: Int
    static let clusterSize = 65536

    enum Layout: String { case golden, scattered }

    func run(into report: Report) throws {
        report.section("Reads, page cache warm (\(datasetSize >> 20) MiB, \(Self.clusterSize >> 10) KiB clusters)")
        let storePath = directory + "/reads"
        let store = try BlockStore(directory: storePath, options: options)
        defer {
            store.close()
            try? FileManager.default.removeItem(atPath: storePath)
        }
        let dataset = UnsafeMutableRawBufferPointer.allocate(byteCount: datasetSize, alignment: 4096)
        defer { dataset.deallocate() }
        fillRandom(dataset, seed: 42)

        let plain = try PlainFile(path: directory + "/plain.img", size: UInt64(datasetSize))
        for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
            try plain.write(UnsafeRawBufferPointer(rebasing: dataset[offset..<offset + (1 << 20)]), at: UInt64(offset))
        }
        var readers: [(String, (UnsafeMutableRawBufferPointer, UInt64) throws -> Void)] = [("plain", plain.read)]
        var handles: [VolumeHandle] = []
        defer { for handle in handles { try? handle.close() } }
        for (layout, depth) in [(Layout.golden, 1), (.golden, 16), (.golden, 64), (.scattered, 16), (.scattered, 64)] {
            let handle = try buildChain(store, layout: layout, depth: depth, dataset: UnsafeRawBufferPointer(dataset))
            handles.append(handle)
            readers.append((depth == 1 ? "depth1" : "\(layout.rawValue)\(depth)", handle.read))
        }
        for handle in handles { try handle.flush() }
        try plain.synchronize()
        dropCachedPages(of: [plain.path] + layerFiles(of: storePath))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        for (name, read) in readers {
            for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
                try read(buffer, UInt64(offset))
                guard memcmp(buffer.baseAddress!, dataset.baseAddress! + offset, 1 << 20) == 0 else {
                    throw BenchError("\(name) read back other bytes at \(offset)")
                }
            }
        }

        var generator = SplitMix(state: 7)
        let offsets = (0..<randomReads).map { _ in (generator.next() % UInt64(datasetSize / 4096)) * 4096 }
        var random: [String: [Double]] = [:]
        var sequential: [String: [Double]] = [:]
        let small = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<4096])
        for _ in 0..<rounds {
            for (name, read) in readers {
                let seconds = try measure { for offset in offsets { try read(small, offset) } }
                random[name, default: []].append(Double(randomReads) / seconds)
                let sequentialSeconds = try measure {
                    for _ in 0..<sequentialPasses {
                        for offset in stride(from: 0, to: datasetSize, by: 1 << 20) { try read(buffer, UInt64(offset)) }
                    }
                }
                sequential[name, default: []].append(Double(datasetSize * sequentialPasses) / sequentialSeconds / 1e6)
            }
        }
        // Best round of each: the figure least disturbed by the rest of the machine.
        let iops = random.mapValues { $0.max()! }
        let throughput = sequential.mapValues { $0.max()! }
        let names = readers.map(\.0)
        for name in names { report.add("read4k_iops_\(name)", iops[name], "IOPS", "4 KiB random reads, \(name)") }
        for name in names { report.add("read1m_mbps_\(name)", throughput[name], "MB/s", "1 MiB sequential reads, \(name)") }
        report.add("read4k_depth64_over_depth1", iops["golden64"]! / iops["depth1"]!, "x", "4 KiB random: depth 64 / depth 1 (golden)")
        report.add("read4k_depth64_over_plain", iops["golden64"]! / iops["plain"]!, "x", "4 KiB random: depth 64 / plain file (golden)")
        report.add("read4k_depth1_over_plain", iops["depth1"]! / iops["plain"]!, "x", "4 KiB random: depth 1 / plain file")
        report.add("read1m_depth64_over_depth1", throughput["golden64"]! / throughput["depth1"]!, "x", "1 MiB sequential: depth 64 / depth 1 (golden)")
        report.add("read1m_depth64_over_plain", throughput["golden64"]! / throughput["plain"]!, "x", "1 MiB sequential: depth 64 / plain file (golden)")
        report.add("read4k_depth64_over_plain_scattered", iops["scattered64"]! / iops["plain"]!, "x", "4 KiB random: depth 64 / plain file (scattered)")
        report.add("read4k_depth64_over_depth1_scattered", iops["scattered64"]! / iops["depth1"]!, "x", "4 KiB random: depth 64 / depth 1 (scattered)")
        report.add("read1m_depth64_over_plain_scattered", throughput["scattered64"]! / throughput["plain"]!, "x", "1 MiB sequential: depth 64 / plain file (scattered)")
    }

    private func layerFiles(of storePath: String) -> [String] {
        let folder = storePath + "/layers"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).map { folder + "/" + $0 }
    }

    /// A volume of `depth` layers whose contents are `dataset`, a snapshot frozen after each layer.
    private func buildChain(_ store: BlockStore, layout: Layout, depth: Int, dataset: UnsafeRawBufferPointer) throws -> VolumeHandle {
        let volume = try store.createVolume(
            name: "\(layout.rawValue)-\(depth)", size: UInt64(datasetSize), clusterSize: UInt32(Self.clusterSize))
        let handle = try store.open(volumeID: volume.id)
        var generator = SplitMix(state: UInt64(depth))
        let clusters = datasetSize / Self.clusterSize
        let owners = (0..<clusters).map { _ in Int(generator.next() % UInt64(depth)) }
        func writeCluster(_ cluster: Int) throws {
            let start = cluster * Self.clusterSize
            try handle.write(UnsafeRawBufferPointer(rebasing: dataset[start..<start + Self.clusterSize]), at: UInt64(start))
        }
        for layer in 0..<depth {
            switch (layout, layer) {
            case (.golden, 0):
                for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
                    try handle.write(UnsafeRawBufferPointer(rebasing: dataset[offset..<offset + (1 << 20)]), at: UInt64(offset))
                }
            case (.golden, _):
                for _ in 0..<max(1, clusters / 256) { try writeCluster(Int(generator.next() % UInt64(clusters))) }
            case (.scattered, _):
                for cluster in 0..<clusters where owners[cluster] == layer { try writeCluster(cluster) }
            }
            if layer < depth - 1 { _ = try store.createSnapshot(name: "\(layout.rawValue)-\(depth)-\(layer)", of: volume.id) }
        }
        guard try store.volume(id: volume.id).chainDepth == depth else { throw BenchError("chain of depth \(depth) not built") }
        return handle
    }
}
