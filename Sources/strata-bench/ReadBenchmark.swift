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
/// Beside them, `files64` reads the golden depth-64 layout from 64 plain files directly (pread on
/// the file a precomputed table names, no store): what the kernel alone charges for data spread
/// over many sparse files, so `golden64 / files64` is the store's own cost at depth 64.
/// Before timing, every file's cached pages are dropped and everything is read once through each
/// reader in the same 1 MiB pattern (which also checks the bytes), so all start equally warm.
/// Readers then take turns, in a rotating order, for `rounds` rounds; each keeps its best round.
/// Last, the share of cached pages held in multi-page folios, for the plain file and for the
/// bottom and upper files of `files64`: where the kernel builds large folios for the plain file
/// but not for data written and read cluster by cluster, no layered layout can match the plain
/// file on 4 KiB reads (on a filesystem whose page cache holds single pages, the store does).
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
            let handle = try buildChain(store, name: "\(layout.rawValue)-\(depth)", plan: placement(layout: layout, depth: depth), dataset: UnsafeRawBufferPointer(dataset))
            handles.append(handle)
            readers.append((depth == 1 ? "depth1" : "\(layout.rawValue)\(depth)", handle.read))
        }
        let files = try FileChain(directory: directory, plan: placement(layout: .golden, depth: 64),
                                  dataset: UnsafeRawBufferPointer(dataset), clusterSize: Self.clusterSize)
        readers.append(("files64", files.read))
        for handle in handles { try handle.flush() }
        try plain.synchronize()
        try files.synchronize()
        dropCachedPages(of: [plain.path] + files.paths + layerFiles(of: storePath))
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
        for round in 0..<rounds {
            for turn in 0..<readers.count {
                let (name, read) = readers[(turn + round) % readers.count]
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
        report.add("read4k_files64_over_plain", iops["files64"]! / iops["plain"]!, "x", "4 KiB random: 64 plain files in the golden layout / plain file")
        report.add("read4k_depth64_over_files64", iops["golden64"]! / iops["files64"]!, "x", "4 KiB random: depth 64 / the same layout in plain files")
        report.add("read1m_files64_over_plain", throughput["files64"]! / throughput["plain"]!, "x", "1 MiB sequential: 64 plain files in the golden layout / plain file")
        report.add("read1m_depth64_over_files64", throughput["golden64"]! / throughput["files64"]!, "x", "1 MiB sequential: depth 64 / the same layout in plain files")
        report.add("read4k_depth64_over_plain_scattered", iops["scattered64"]! / iops["plain"]!, "x", "4 KiB random: depth 64 / plain file (scattered)")
        report.add("read4k_depth64_over_depth1_scattered", iops["scattered64"]! / iops["depth1"]!, "x", "4 KiB random: depth 64 / depth 1 (scattered)")
        report.add("read1m_depth64_over_plain_scattered", throughput["scattered64"]! / throughput["plain"]!, "x", "1 MiB sequential: depth 64 / plain file (scattered)")
        // Why 4 KiB reads of upper layers cost more here than elsewhere (see PageCacheFolios).
        let share = { (paths: [String]) in PageCacheFolios.largeFolioShare(of: paths).map { $0 * 100 } }
        report.add("large_folio_pct_plain", share([plain.path]), "%", "cached pages in multi-page folios: plain file")
        report.add("large_folio_pct_bottom", share([files.paths[0]]), "%", "cached pages in multi-page folios: bottom of files64")
        report.add("large_folio_pct_upper", share(Array(files.paths.dropFirst())), "%", "cached pages in multi-page folios: upper 63 of files64")
    }

    private func layerFiles(of storePath: String) -> [String] {
        let folder = storePath + "/layers"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).map { folder + "/" + $0 }
    }

    /// Which clusters each layer of a chain writes, bottom first.
    private func placement(layout: Layout, depth: Int) -> [[Int]] {
        var generator = SplitMix(state: UInt64(depth))
        let clusters = datasetSize / Self.clusterSize
        switch layout {
        case .golden:
            return (0..<depth).map { layer in
                layer == 0 ? Array(0..<clusters)
                    : (0..<max(1, clusters / 256)).map { _ in Int(generator.next() % UInt64(clusters)) }
            }
        case .scattered:
            let owners = (0..<clusters).map { _ in Int(generator.next() % UInt64(depth)) }
            return (0..<depth).map { layer in (0..<clusters).filter { owners[$0] == layer } }
        }
    }

    /// A volume with one layer per entry of `plan` (a snapshot frozen after each but the last)
    /// whose contents are `dataset`. A layer writing every cluster writes 1 MiB at a time, like
    /// the plain file; other layers write cluster by cluster.
    private func buildChain(_ store: BlockStore, name: String, plan: [[Int]], dataset: UnsafeRawBufferPointer) throws -> VolumeHandle {
        let volume = try store.createVolume(name: name, size: UInt64(datasetSize), clusterSize: UInt32(Self.clusterSize))
        let handle = try store.open(volumeID: volume.id)
        for (layer, clusters) in plan.enumerated() {
            try writeLayer(clusters, of: dataset) { bytes, offset in try handle.write(bytes, at: offset) }
            if layer < plan.count - 1 { _ = try store.createSnapshot(name: "\(name)-\(layer)", of: volume.id) }
        }
        guard try store.volume(id: volume.id).chainDepth == plan.count else { throw BenchError("chain of depth \(plan.count) not built") }
        return handle
    }
}

/// Writes the given clusters of `dataset` through `write`: in 1 MiB pieces when they are all of them.
private func writeLayer(_ clusters: [Int], of dataset: UnsafeRawBufferPointer,
                        write: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws {
    let clusterSize = ReadBenchmark.clusterSize
    if clusters.count == dataset.count / clusterSize {
        for offset in stride(from: 0, to: dataset.count, by: 1 << 20) {
            try write(UnsafeRawBufferPointer(rebasing: dataset[offset..<offset + (1 << 20)]), UInt64(offset))
        }
    } else {
        for cluster in clusters {
            let start = cluster * clusterSize
            try write(UnsafeRawBufferPointer(rebasing: dataset[start..<start + clusterSize]), UInt64(start))
        }
    }
}

/// A chain's layout in plain sparse files, read without the store: each cluster from the top
/// file that wrote it, adjacent clusters of one file in one pread (as the store reads).
private final class FileChain {
    let files: [PlainFile]
    /// Per cluster, the index of the file answering for it.
    let owners: [Int]
    let clusterShift: Int
    var paths: [String] { files.map(\.path) }

    init(directory: String, plan: [[Int]], dataset: UnsafeRawBufferPointer, clusterSize: Int) throws {
        var owners = [Int](repeating: 0, count: dataset.count / clusterSize)
        var files: [PlainFile] = []
        for (layer, clusters) in plan.enumerated() {
            let file = try PlainFile(path: directory + "/files-\(layer).img", size: UInt64(dataset.count))
            try writeLayer(clusters, of: dataset) { bytes, offset in try file.write(bytes, at: offset) }
            for cluster in clusters { owners[cluster] = layer }
            files.append(file)
        }
        self.files = files
        self.owners = owners
        clusterShift = clusterSize.trailingZeroBitCount
    }

    func synchronize() throws { for file in files { try file.synchronize() } }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let end = offset + UInt64(buffer.count)
        var position = offset
        while position < end {
            let owner = owners[Int(position >> UInt64(clusterShift))]
            var runEnd = min(end, ((position >> UInt64(clusterShift)) + 1) << UInt64(clusterShift))
            while runEnd < end, owners[Int(runEnd >> UInt64(clusterShift))] == owner {
                runEnd = min(end, runEnd + (1 << UInt64(clusterShift)))
            }
            try files[owner].read(into: UnsafeMutableRawBufferPointer(
                rebasing: buffer[Int(position - offset)..<Int(runEnd - offset)]), at: position)
            position = runEnd
        }
    }
}
