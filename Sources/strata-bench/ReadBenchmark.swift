import BlockStore
import Foundation

/// Reads through chains of 1, 16 and 64 layers against a plain sparse file holding the same bytes.
/// Every cluster of a chained volume lives in a layer picked at random, so at depth 64 nearly
/// every neighbouring cluster comes from another layer: the worst case for the lookup and for
/// merging reads. Before timing, every file's cached pages are dropped and everything is read
/// once the same way, so all readers start from a page cache built by the same pattern.
struct ReadBenchmark {
    let directory: String
    let options: StoreOptions
    let datasetSize: Int
    let randomReads: Int
    let sequentialPasses: Int
    let rounds: Int
    static let clusterSize = 65536

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
        try plain.write(UnsafeRawBufferPointer(dataset), at: 0)
        var readers: [(String, (UnsafeMutableRawBufferPointer, UInt64) throws -> Void)] = [("plain", plain.read)]
        var handles: [VolumeHandle] = []
        defer { for handle in handles { try? handle.close() } }
        for depth in [1, 16, 64] {
            let handle = try buildChain(store, depth: depth, dataset: UnsafeRawBufferPointer(dataset))
            handles.append(handle)
            readers.append(("depth\(depth)", handle.read))
        }
        // Same page cache treatment for every reader: write back, drop every file's cached
        // pages, then read everything once in the same 1 MiB pattern (which also checks it).
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
        for name in ["plain", "depth1", "depth16", "depth64"] {
            report.add("read4k_iops_\(name)", iops[name], "IOPS", "4 KiB random reads, \(name)")
        }
        for name in ["plain", "depth1", "depth16", "depth64"] {
            report.add("read1m_mbps_\(name)", throughput[name], "MB/s", "1 MiB sequential reads, \(name)")
        }
        report.add("read4k_depth64_over_depth1", iops["depth64"]! / iops["depth1"]!, "x", "4 KiB random: depth 64 / depth 1")
        report.add("read4k_depth64_over_plain", iops["depth64"]! / iops["plain"]!, "x", "4 KiB random: depth 64 / plain file")
        report.add("read4k_depth1_over_plain", iops["depth1"]! / iops["plain"]!, "x", "4 KiB random: depth 1 / plain file")
        report.add("read1m_depth64_over_depth1", throughput["depth64"]! / throughput["depth1"]!, "x", "1 MiB sequential: depth 64 / depth 1")
        report.add("read1m_depth64_over_plain", throughput["depth64"]! / throughput["plain"]!, "x", "1 MiB sequential: depth 64 / plain file")
    }

    private func layerFiles(of storePath: String) -> [String] {
        let folder = storePath + "/layers"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).map { folder + "/" + $0 }
    }

    /// A volume of `depth` layers holding `dataset`: each cluster written in a random layer, a
    /// snapshot frozen after each layer.
    private func buildChain(_ store: BlockStore, depth: Int, dataset: UnsafeRawBufferPointer) throws -> VolumeHandle {
        let volume = try store.createVolume(name: "depth\(depth)", size: UInt64(datasetSize), clusterSize: UInt32(Self.clusterSize))
        let handle = try store.open(volumeID: volume.id)
        var generator = SplitMix(state: UInt64(depth))
        let clusters = datasetSize / Self.clusterSize
        let owners = (0..<clusters).map { _ in Int(generator.next() % UInt64(depth)) }
        for layer in 0..<depth {
            for cluster in 0..<clusters where owners[cluster] == layer {
                let start = cluster * Self.clusterSize
                try handle.write(UnsafeRawBufferPointer(rebasing: dataset[start..<start + Self.clusterSize]), at: UInt64(start))
            }
            if layer < depth - 1 { _ = try store.createSnapshot(name: "depth\(depth)-\(layer)", of: volume.id) }
        }
        try handle.flush()
        guard try store.volume(id: volume.id).chainDepth == depth else { throw BenchError("chain of depth \(depth) not built") }
        return handle
    }
}
