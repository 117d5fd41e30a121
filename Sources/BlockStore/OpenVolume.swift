import Synchronization

/// The I/O engine of one open volume, shared by all its handles: the open layer files of its
/// chain (bottom first, the writable head last) and the cluster index.
///
/// Locking: `structure` is held for reading (shared) by every read, write and discard, and for
/// writing by the rare operations that change the chain or the index shape (snapshot, expand,
/// flatten's last step, flush's capture of dirty map pages). Readers look entries up without
/// any further lock (entries are atomic). Writers hold their chunk's lock across a copy-up, so
/// two partial writes to one inherited cluster cannot lose each other. `flushLock` serializes
/// flushes and head changes.
///
/// Copy-up works per subcluster (see `Subclusters`): a partial write into an inherited cluster
/// copies only the subclusters it touches, and the cluster becomes mixed in the index (its
/// subclusters resolved one by one, still O(1)). A head whose map is in format 1 cannot record
/// that, so it copies whole clusters.
///
/// Invariant: in the head's data file, a cluster (or subcluster) the head does not hold as data
/// reads as zeros (never written, punched on discard, or punched by crash recovery).
final class OpenVolume: @unchecked Sendable {
    let volumeID: String
    let clusterSize: Int
    let clusterShift: Int
    let subclusters: Subclusters
    let structure = ReadWriteLock()
    let flushLock = Mutex<Void>(())
    let index: ClusterIndex
    /// Head subclusters holding data, kept current by writes and discards.
    let headDataSubclusters = Atomic<Int>(0)
    /// Whether the head map's header already says dirty (set durably before the first change).
    let headMarkedDirty = Atomic<Bool>(false)
    private let dirtyMarkLock = Mutex<Void>(())

    // Guarded by `structure`. A layer without files (never written) is nil; it owns no cluster.
    var layers: [LayerFiles?]
    var size: UInt64
    var isClosed = false
    /// Head allocation last written to the catalog (guarded by `flushLock`).
    var persistedHeadBytes: UInt64
    /// What a flatten copied into the head (not a change; see `CopiedSubclusters`), and where its
    /// record is kept (set by the store once the volume is open).
    var copies: CopiedSubclusters
    var lineage: LineageDirectory?
    /// A detached head keeps a zero record for a discarded cluster even at the bottom of its
    /// chain, where reads would not need it: its former chain's listing needs to see the change.
    var recordsDiscardsAtBottom = false

    var head: LayerFiles { layers[layers.count - 1]! }
    var headPosition: Int { layers.count - 1 }
    /// Whether a partial write into an inherited cluster may copy up subclusters only.
    var headTakesPartialClusters: Bool { subclusters.count > 1 && head.map.supportsPartialClusters }

    /// Bytes the head holds, from its subcluster count.
    var headAllocatedBytes: UInt64 { UInt64(headDataSubclusters.load(ordering: .relaxed)) << UInt64(subclusters.shift) }

    init(volumeID: String, layers: [LayerFiles?], size: UInt64, clusterSize: UInt32, persistedHeadBytes: UInt64) {
        self.volumeID = volumeID
        self.layers = layers
        self.size = size
        self.clusterSize = Int(clusterSize)
        self.clusterShift = Int(clusterSize).trailingZeroBitCount
        subclusters = Subclusters(clusterSize: Int(clusterSize))
        self.persistedHeadBytes = persistedHeadBytes
        copies = CopiedSubclusters(layerID: layers[layers.count - 1]!.layerID, clusterSize: Int(clusterSize))
        index = ClusterIndex(clusterCount: Int((size + UInt64(clusterSize) - 1) / UInt64(clusterSize)))
    }

    /// Opens the files of a chain (bottom first; the head must have files) and builds the index
    /// from their maps.
    static func open(
        volumeID: String, chain: [(id: Int64, materialized: Bool)], size: UInt64, clusterSize: UInt32,
        persistedHeadBytes: UInt64, directory: LayerDirectory
    ) throws -> OpenVolume {
        var layers: [LayerFiles?] = []
        do {
            for (position, layer) in chain.enumerated() {
                let isHead = position == chain.count - 1
                layers.append(isHead || layer.materialized ? try directory.openLayer(layer.id, writable: isHead) : nil)
            }
            let volume = OpenVolume(volumeID: volumeID, layers: layers, size: size, clusterSize: clusterSize,
                                    persistedHeadBytes: persistedHeadBytes)
            try volume.buildIndex()
            return volume
        } catch {
            for layer in layers { layer?.close() }
            throw error
        }
    }

    private func buildIndex() throws {
        var headData = 0
        let fullMask = subclusters.fullMask
        for (position, layer) in layers.enumerated() {
            guard let layer else { continue }
            let isHead = position == headPosition
            try layer.map.forEachEntry { cluster, entry in
                guard cluster < index.clusterCount else {
                    throw StoreError(.corrupt, "layer \(layer.layerID) maps cluster \(cluster) beyond the volume")
                }
                switch entry.state {
                case .partial where entry.subclusterMask & ~fullMask != 0:
                    throw StoreError(.corrupt, "layer \(layer.layerID) maps subclusters 0x\(String(entry.subclusterMask, radix: 16)) of cluster \(cluster), which has \(subclusters.count)")
                case .partial where entry.subclusterMask != fullMask:
                    index.setPartialUnlocked(cluster, position: position, mask: entry.subclusterMask)
                    if isHead { headData += entry.subclusterMask.nonzeroBitCount }
                case .partial, .data:
                    index.setUnlocked(cluster, IndexEntry(position: position, state: .data))
                    if isHead { headData += subclusters.count }
                case .zero:
                    index.setUnlocked(cluster, IndexEntry(position: position, state: .zero))
                case .unallocated:
                    break
                }
            }
        }
        headDataSubclusters.store(headData, ordering: .relaxed)
    }

    // MARK: Writes

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try structure.withReadLock {
            try checkOpenAndInRange(offset: offset, count: bytes.count)
            guard bytes.count > 0 else { return }
            try markHeadDirtyIfNeeded()
            defer { copies.clear(offset: offset, length: UInt64(bytes.count)) }
            var scratch: UnsafeMutableRawBufferPointer?
            defer { scratch?.deallocate() }
            let end = offset + UInt64(bytes.count)
            let chunkBytes = UInt64(ClusterIndex.chunkSize) << UInt64(clusterShift)
            var position = offset
            while position < end {
                let segmentEnd = min(end, (position / chunkBytes + 1) * chunkBytes)
                let segment = UnsafeRawBufferPointer(rebasing: bytes[Int(position - offset)..<Int(segmentEnd - offset)])
                try writeWithinChunk(segment, at: position, scratch: &scratch)
                position = segmentEnd
            }
        }
    }

    /// Writes bytes that lie inside one index chunk, holding its lock throughout. Clusters that
    /// need no copy-up (the head holds them, the write covers them, or nothing lies below) are
    /// written in runs, one pwrite per run; a partial write over inherited data copies up the
    /// subclusters it touches (the whole cluster for a format 1 head) so the data below is kept.
    func writeWithinChunk(_ segment: UnsafeRawBufferPointer, at start: UInt64,
                          scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let headPosition = self.headPosition
        let head = self.head
        let headData = IndexEntry(position: headPosition, state: .data).rawValue
        let partialCopyUp = headTakesPartialClusters
        let firstCluster = Int(start >> UInt64(clusterShift))
        let chunk = firstCluster / ClusterIndex.chunkSize
        let chunkFirstCluster = chunk * ClusterIndex.chunkSize
        let end = start + UInt64(segment.count)
        try index.modifyChunk(chunk) { entries -> ((), Bool) in
            var changed = false
            // The pending run of direct writes, and the slots it will newly give to the head.
            var runStart: UInt64?
            var runNewSlots: [Int] = []
            func writeRun(upTo runEnd: UInt64) throws {
                guard let begin = runStart else { return }
                runStart = nil
                do {
                    try head.data.write(UnsafeRawBufferPointer(rebasing: segment[Int(begin - start)..<Int(runEnd - start)]), at: begin)
                } catch {
                    // Keep the invariant: a cluster the head does not hold reads zeros in its file.
                    for slot in runNewSlots {
                        try? head.data.punchHole(at: UInt64(chunkFirstCluster + slot) << UInt64(clusterShift), length: UInt64(clusterSize))
                    }
                    runNewSlots.removeAll()
                    throw error
                }
                for slot in runNewSlots { entries[slot] = headData }
                if !runNewSlots.isEmpty {
                    headDataSubclusters.add(runNewSlots.count * subclusters.count, ordering: .relaxed)
                    changed = true
                }
                runNewSlots.removeAll()
            }
            var position = start
            while position < end {
                let cluster = Int(position >> UInt64(clusterShift))
                let slot = cluster - chunkFirstCluster
                let clusterStart = UInt64(cluster) << UInt64(clusterShift)
                let pieceEnd = min(end, clusterStart + UInt64(clusterSize))
                let piece = UnsafeRawBufferPointer(rebasing: segment[Int(position - start)..<Int(pieceEnd - start)])
                let coversCluster = position == clusterStart && pieceEnd >= min(clusterStart + UInt64(clusterSize), size)
                let entry = IndexEntry(rawValue: entries[slot])
                let headHolds = entry.position == headPosition && entry.hasData
                if entry.isMixed {
                    try writeRun(upTo: position)
                    if coversCluster {
                        try overwriteMixedCluster(entries, slot: slot, with: piece, at: position)
                    } else if !partialCopyUp {
                        try completeMixedCluster(entries, cluster: cluster, scratch: &scratch)
                        try head.data.write(piece, at: position)
                    } else {
                        try writeSubclusters(piece, at: position, of: entries, slot: slot, scratch: &scratch)
                    }
                    changed = true
                } else if headHolds || coversCluster || !entry.hasData {
                    // Nothing below to keep (or the head has it): the bytes go straight in.
                    if runStart == nil { runStart = position }
                    if !headHolds { runNewSlots.append(slot) }
                } else if partialCopyUp {
                    try writeRun(upTo: position)
                    _ = entries.makeMixed(slot)
                    try writeSubclusters(piece, at: position, of: entries, slot: slot, scratch: &scratch)
                    changed = true
                } else {
                    try writeRun(upTo: position)
                    try copyIntoHead(from: entry.position!, at: clusterStart, length: clusterSize, merging: piece, at: position,
                                     scratch: &scratch)
                    entries[slot] = headData
                    headDataSubclusters.add(subclusters.count, ordering: .relaxed)
                    changed = true
                }
                position = pieceEnd
            }
            try writeRun(upTo: end)
            return ((), changed)
        }
    }

    func scratchBuffer(_ scratch: inout UnsafeMutableRawBufferPointer?) -> UnsafeMutableRawBufferPointer {
        if let scratch { return scratch }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        scratch = buffer
        return buffer
    }

    /// Copies `length` bytes at `offset` from the layer at `owner` into the head, with `piece`
    /// merged in at `position` when given. The one way data moves up the chain (copy-up of a
    /// cluster or subcluster, flatten): on failure the range is punched, so the head keeps
    /// reading zeros where it holds nothing.
    func copyIntoHead(from owner: Int, at offset: UInt64, length: Int, merging piece: UnsafeRawBufferPointer? = nil,
                      at position: UInt64 = 0, scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let buffer = UnsafeMutableRawBufferPointer(rebasing: scratchBuffer(&scratch)[0..<length])
        do {
            try layers[owner]!.data.read(into: buffer, at: offset)
            if let piece {
                let inner = Int(position - offset)
                UnsafeMutableRawBufferPointer(rebasing: buffer[inner..<inner + piece.count]).copyMemory(from: piece)
            }
            try head.data.write(UnsafeRawBufferPointer(buffer), at: offset)
        } catch {
            try? head.data.punchHole(at: offset, length: UInt64(length))
            throw error
        }
    }

    /// Discards a range: whole clusters are released (recorded as zero when a lower layer could
    /// show through), partial clusters get zeros written.
    func discard(at offset: UInt64, length: UInt64) throws {
        try structure.withReadLock {
            try checkOpenAndInRange(offset: offset, count: Int(clamping: length))
            guard length > 0 else { return }
            try markHeadDirtyIfNeeded()
            defer { copies.clear(offset: offset, length: length) }
            var scratch: UnsafeMutableRawBufferPointer?
            defer { scratch?.deallocate() }
            let end = offset + length
            var position = offset
            while position < end {
                let clusterStart = position & ~UInt64(clusterSize - 1)
                let pieceEnd = min(end, clusterStart + UInt64(clusterSize))
                let clusterExtentEnd = min(clusterStart + UInt64(clusterSize), size)
                if position == clusterStart && pieceEnd >= clusterExtentEnd {
                    try releaseCluster(Int(clusterStart >> UInt64(clusterShift)))
                } else if index.entry(of: Int(clusterStart >> UInt64(clusterShift))).hasData {
                    let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(pieceEnd - position), alignment: 16)
                    defer { zeros.deallocate() }
                    zeros.initializeMemory(as: UInt8.self, repeating: 0)
                    try writeWithinChunk(UnsafeRawBufferPointer(zeros), at: position, scratch: &scratch)
                }
                position = pieceEnd
            }
        }
    }

    private func releaseCluster(_ cluster: Int) throws {
        let headPosition = self.headPosition
        let head = self.head
        let slot = cluster % ClusterIndex.chunkSize
        try index.modifyChunk(cluster / ClusterIndex.chunkSize) { entries -> ((), Bool) in
            let entry = IndexEntry(rawValue: entries[slot])
            guard entry.hasData else { return ((), false) }
            let headHeld = entry.isMixed
                ? entries.record(slot).mask(of: IndexEntry(position: headPosition, state: .data), count: subclusters.count).nonzeroBitCount
                : entry.position == headPosition ? subclusters.count : 0
            if headHeld > 0 {
                try head.data.punchHole(at: UInt64(cluster) << UInt64(clusterShift), length: UInt64(clusterSize))
                headDataSubclusters.subtract(headHeld, ordering: .relaxed)
            }
            entries[slot] = headPosition == 0 && !recordsDiscardsAtBottom ? 0 : IndexEntry(position: headPosition, state: .zero).rawValue
            return ((), true)
        }
    }

    // MARK: Helpers

    func checkOpenAndInRange(offset: UInt64, count: Int) throws {
        guard !isClosed else { throw StoreError(.invalidArgument, "volume \(volumeID) is closed") }
        guard offset <= size, UInt64(count) <= size - offset else {
            throw StoreError(.outOfRange, "range \(offset)+\(count) is beyond the volume size \(size)")
        }
    }

    /// Durably flags the head map dirty before its first change, so recovery knows to check it.
    func markHeadDirtyIfNeeded() throws {
        guard !headMarkedDirty.load(ordering: .acquiring) else { return }
        try dirtyMarkLock.withLock { _ in
            guard !headMarkedDirty.load(ordering: .acquiring) else { return }
            try head.map.setDirty(true)
            headMarkedDirty.store(true, ordering: .releasing)
        }
    }
}

extension OpenVolume {
    /// The head layer and its allocated bytes right now, nil once closed.
    func liveHeadAllocation() -> (layerID: Int64, bytes: UInt64)? {
        structure.withReadLock {
            isClosed ? nil : (head.layerID, headAllocatedBytes)
        }
    }
}
