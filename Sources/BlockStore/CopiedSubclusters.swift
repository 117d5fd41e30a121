import Synchronization

/// The subclusters a flatten copied into a head and nothing has written or discarded since:
/// their bytes equal what the head inherited, so changed-block listings leave them out.
///
/// Empty (and never consulted on the I/O path beyond one atomic load) for every head that no
/// flatten touched. A write or discard clears what it covers after it ran, still under the
/// volume's structure lock, so a snapshot never sees a write whose copy mark is still set.
/// Dirty pages are written to the layer's `copies.map` (an allocation map: `.data` for a whole
/// cluster, `.partial` for some subclusters) by each flush, before the head's map pages.
final class CopiedSubclusters: @unchecked Sendable {
    private struct State {
        /// Per index chunk (4096 clusters), one mask per cluster.
        var chunks: [Int: [UInt16]] = [:]
        var dirtyChunks: Set<Int> = []
        var file: AllocationMapFile?
    }

    let layerID: Int64
    private let subclusters: Subclusters
    private let clusterShift: Int
    private let state = Mutex(State())
    private let active = Atomic<Bool>(false)

    init(layerID: Int64, clusterSize: Int) {
        self.layerID = layerID
        subclusters = Subclusters(clusterSize: clusterSize)
        clusterShift = clusterSize.trailingZeroBitCount
    }

    var isActive: Bool { active.load(ordering: .acquiring) }

    /// Marks subclusters of a cluster as copied (flatten, with the cluster's chunk lock held).
    func record(cluster: Int, mask: UInt16) {
        guard mask != 0 else { return }
        state.withLock { state in
            let chunk = cluster / ClusterIndex.chunkSize
            state.chunks[chunk, default: [UInt16](repeating: 0, count: ClusterIndex.chunkSize)][cluster % ClusterIndex.chunkSize] |= mask
            state.dirtyChunks.insert(chunk)
        }
        active.store(true, ordering: .releasing)
    }

    /// Clears the marks of every subcluster that `offset..<offset+length` touches.
    func clear(offset: UInt64, length: UInt64) {
        guard length > 0, isActive else { return }
        let shift = UInt64(subclusters.shift)
        let firstSubcluster = offset >> shift
        let lastSubcluster = (offset + length - 1) >> shift
        let perCluster = UInt64(subclusters.count)
        state.withLock { state in
            var subcluster = firstSubcluster
            while subcluster <= lastSubcluster {
                let cluster = Int(subcluster / perCluster)
                let first = Int(subcluster % perCluster)
                let last = Int(min(lastSubcluster, UInt64(cluster + 1) * perCluster - 1) % perCluster)
                let chunk = cluster / ClusterIndex.chunkSize
                if state.chunks[chunk] != nil {
                    let bits = UInt32((1 << (last + 1)) - (1 << first))
                    let slot = cluster % ClusterIndex.chunkSize
                    if state.chunks[chunk]![slot] & UInt16(truncatingIfNeeded: bits) != 0 {
                        state.chunks[chunk]![slot] &= ~UInt16(truncatingIfNeeded: bits)
                        state.dirtyChunks.insert(chunk)
                    }
                }
                subcluster = UInt64(cluster + 1) * perCluster
            }
        }
    }

    /// Loads a record written earlier (a flattened head opened again).
    func load(from file: AllocationMapFile) throws {
        try state.withLock { state in
            try file.forEachEntry { cluster, entry in
                let mask: UInt16 = entry.state == .data ? subclusters.fullMask : entry.state == .partial ? entry.subclusterMask : 0
                guard mask != 0 else { return }
                state.chunks[cluster / ClusterIndex.chunkSize, default: [UInt16](repeating: 0, count: ClusterIndex.chunkSize)][
                    cluster % ClusterIndex.chunkSize] = mask & subclusters.fullMask
            }
            state.file = file
            if !state.chunks.isEmpty { active.store(true, ordering: .releasing) }
        }
    }

    /// Writes the pages changed since the last call to `copies.map` (created on first use) and
    /// makes them durable. On failure the pages stay dirty.
    func persist(in lineage: LineageDirectory) throws {
        guard isActive else { return }
        try state.withLock { state in
            guard !state.dirtyChunks.isEmpty else { return }
            if state.file == nil {
                try lineage.createFolder(layerID)
                state.file = try AllocationMapFile.create(at: lineage.copiesPath(layerID), layerID: layerID,
                                                          clusterSize: UInt32(1 << clusterShift))
                try SystemDirectory.synchronize(lineage.folder(layerID))
            }
            let file = state.file!
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: file.pageBytes, alignment: 4096)
            defer { page.deallocate() }
            for chunk in state.dirtyChunks.sorted() {
                let masks = state.chunks[chunk]
                file.encodePage({ slot in
                    let mask = masks?[slot] ?? 0
                    if mask == 0 { return MapEntry(.unallocated) }
                    return mask == subclusters.fullMask ? MapEntry(.data) : MapEntry(.partial, subclusterMask: mask)
                }, into: page)
                try file.writePage(chunk, entries: UnsafeRawBufferPointer(page))
            }
            try file.file.synchronizeData()
            state.dirtyChunks.removeAll()
        }
    }

    func close() {
        state.withLock { state in
            state.file?.file.close()
            state.file = nil
        }
    }
}
