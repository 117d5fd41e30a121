import BlockStore
import Foundation

/// 4 KiB random writes into a fresh clone, each into a cluster it still inherits (so each one
/// is a copy-up: of its 4 KiB subcluster, or of the whole cluster for a format 1 head), against
/// the same writes into a plain file holding the same bytes.
/// Both start from the same bytes written the same way (1 MiB writes), dropped from the page
/// cache and read back once the same way. Measured twice: the writes alone (page cache), and
/// the writes followed by a flush / fdatasync. Also with 4 KiB clusters, where a 4 KiB write
/// covers its cluster and needs no copy.
struct CopyUpBenchmark {
    let directory: String
    let options: StoreOptions
    let datasetSize: Int
    let writes: Int
    let rounds: Int

    func run(into report: Report) throws {
        report.section("Copy-up writes (4 KiB random into a fresh clone, each into an inherited cluster)")
        for clusterSize in [65536, 4096] {
            try measureCopyUp(clusterSize: clusterSize, into: report)
        }
    }

    private func measureCopyUp(clusterSize: Int, into report: Report) throws {
        let storePath = directory + "/copyup-\(clusterSize)"
        let store = try BlockStore(directory: storePath, options: options)
        defer {
            store.close()
            try? FileManager.default.removeItem(atPath: storePath)
        }
        let dataset = UnsafeMutableRawBufferPointer.allocate(byteCount: datasetSize, alignment: 4096)
        defer { dataset.deallocate() }
        fillRandom(dataset, seed: 9)
        let base = try store.createVolume(name: "base", size: UInt64(datasetSize), clusterSize: UInt32(clusterSize))
        let baseHandle = try store.open(volumeID: base.id)
        for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
            try baseHandle.write(UnsafeRawBufferPointer(rebasing: dataset[offset..<offset + (1 << 20)]), at: UInt64(offset))
        }
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "base-snap", of: base.id)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { scratch.deallocate() }

        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { block.deallocate() }
        fillRandom(block, seed: 10)
        let clusters = datasetSize / clusterSize
        var cachedRatios: [Double] = []
        var durableRatios: [Double] = []
        var storeRates: [Double] = []
        var plainRates: [Double] = []
        for round in 0..<rounds {
            // Distinct clusters, a random 4 KiB block inside each.
            var generator = SplitMix(state: UInt64(round + 1))
            var chosen = Array(0..<clusters)
            for index in stride(from: chosen.count - 1, to: 0, by: -1) {
                chosen.swapAt(index, Int(generator.next() % UInt64(index + 1)))
            }
            let blocksPerCluster = clusterSize / 4096
            let offsets = chosen.prefix(writes).map {
                UInt64($0 * clusterSize + Int(generator.next() % UInt64(blocksPerCluster)) * 4096)
            }
            let plain = try PlainFile(path: directory + "/copyup-plain.img", size: UInt64(datasetSize))
            for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
                try plain.write(UnsafeRawBufferPointer(rebasing: dataset[offset..<offset + (1 << 20)]), at: UInt64(offset))
            }
            try plain.synchronize()
            let clone = try store.createVolume(name: "clone-\(round)", size: UInt64(datasetSize), source: .snapshot(id: snapshot.id))
            let handle = try store.open(volumeID: clone.id)
            // Same page cache treatment: drop both, then read both once the same way.
            let layers = storePath + "/layers"
            dropCachedPages(of: [plain.path] + ((try? FileManager.default.contentsOfDirectory(atPath: layers)) ?? []).map { layers + "/" + $0 })
            for offset in stride(from: 0, to: datasetSize, by: 1 << 20) {
                try handle.read(into: scratch, at: UInt64(offset))
                try plain.read(into: scratch, at: UInt64(offset))
            }

            let storeWrite = try measure { for offset in offsets { try handle.write(UnsafeRawBufferPointer(block), at: offset) } }
            let storeFlush = try measure { try handle.flush() }
            let plainWrite = try measure { for offset in offsets { try plain.write(UnsafeRawBufferPointer(block), at: offset) } }
            let plainFlush = try measure { try plain.synchronize() }
            cachedRatios.append(plainWrite / storeWrite)
            durableRatios.append((plainWrite + plainFlush) / (storeWrite + storeFlush))
            storeRates.append(Double(offsets.count) / (storeWrite + storeFlush))
            plainRates.append(Double(offsets.count) / (plainWrite + plainFlush))
            // Spot-check: the written block and the inherited rest of its cluster.
            let check = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<clusterSize])
            let cluster = Int(offsets[0]) / clusterSize * clusterSize
            try handle.read(into: check, at: UInt64(cluster))
            let inner = Int(offsets[0]) - cluster
            guard memcmp(check.baseAddress! + inner, block.baseAddress!, 4096) == 0,
                inner == 0 || memcmp(check.baseAddress!, dataset.baseAddress! + cluster, inner) == 0
            else { throw BenchError("copy-up read back other bytes") }
            try handle.close()
            try store.deleteVolume(id: clone.id)
        }
        let suffix = clusterSize == 65536 ? "" : "_cluster\(clusterSize >> 10)k"
        let label = "\(clusterSize >> 10) KiB clusters"
        report.add("copyup_write4k_iops\(suffix)", percentile(storeRates, 0.5), "IOPS", "store, writes + flush, \(label) (\(writes) writes)")
        report.add("plain_write4k_iops\(suffix)", percentile(plainRates, 0.5), "IOPS", "plain file, writes + fdatasync")
        report.add("copyup_write4k_over_plain\(suffix)", percentile(durableRatios, 0.5), "x", "copy-up / plain, writes + flush, \(label)")
        report.add("copyup_write4k_over_plain_cached\(suffix)", percentile(cachedRatios, 0.5), "x", "copy-up / plain, writes only (page cache), \(label)")
    }
}
