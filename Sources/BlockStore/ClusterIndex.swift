/// One entry of the cluster index: which layer of the chain answers for a cluster.
/// Raw value 0: no layer holds it (reads zeros). Otherwise the low 15 bits are the layer's
/// position in the chain plus one (0 = bottom), and bit 15 says the layer recorded a zero cluster.
struct IndexEntry: Equatable, Sendable {
    var rawValue: UInt16

    static let none = IndexEntry(rawValue: 0)
    private static let zeroFlag: UInt16 = 0x8000

    init(rawValue: UInt16) { self.rawValue = rawValue }

    init(position: Int, state: ClusterState) {
        precondition(state != .unallocated && position < 0x7FFF)
        rawValue = UInt16(position + 1) | (state == .zero ? Self.zeroFlag : 0)
    }

    /// Chain position of the owning layer, nil when no layer holds the cluster.
    var position: Int? {
        let value = rawValue & ~Self.zeroFlag
        return value == 0 ? nil : Int(value) - 1
    }

    var isZero: Bool { rawValue & Self.zeroFlag != 0 }
    /// True when the owning layer holds data (not a zero record).
    var hasData: Bool { rawValue != 0 && !isZero }
}

/// The per-open-volume map from cluster to owning layer: O(1) lookup whatever the chain depth.
///
/// Clusters are grouped in chunks of `AllocationMapFile.entriesPerPage` (one map page each),
/// allocated on first use so a sparse or unwritten volume costs almost nothing. Each chunk is
/// guarded by one of a fixed pool of striped reader–writer locks; readers of different chunks
/// never contend, and a writer that copies up a cluster holds only its chunk's lock.
/// Changing the number of chunks or renumbering positions requires the volume's structure lock
/// held for writing (no I/O in flight).
final class ClusterIndex: @unchecked Sendable {
    static let chunkSize = AllocationMapFile.entriesPerPage

    private var chunks: UnsafeMutablePointer<UnsafeMutablePointer<UInt16>?>
    /// Per chunk: whether head entries changed since the head map was last written.
    private var dirtyFlags: UnsafeMutablePointer<Bool>
    private(set) var chunkCount: Int
    private(set) var clusterCount: Int
    private let locks = StripedLocks(count: 256)

    init(clusterCount: Int) {
        self.clusterCount = clusterCount
        chunkCount = (clusterCount + Self.chunkSize - 1) / Self.chunkSize
        chunks = .allocate(capacity: max(chunkCount, 1))
        chunks.initialize(repeating: nil, count: max(chunkCount, 1))
        dirtyFlags = .allocate(capacity: max(chunkCount, 1))
        dirtyFlags.initialize(repeating: false, count: max(chunkCount, 1))
    }

    deinit {
        for index in 0..<chunkCount { chunks[index]?.deallocate() }
        chunks.deallocate()
        dirtyFlags.deallocate()
    }

    // MARK: Concurrent access (structure lock held for reading)

    /// Calls `body` with the chunk's entries (nil when the chunk was never written) under its read lock.
    @inline(__always)
    func withChunk<T>(_ chunk: Int, _ body: (UnsafePointer<UInt16>?) throws -> T) rethrows -> T {
        try locks.withReadLock(for: chunk) { try body(UnsafePointer(chunks[chunk])) }
    }

    /// Calls `body` with the chunk's entries, allocating them if needed, under its write lock.
    /// `body` returns whether it changed a head entry; the chunk is then marked for the next flush.
    @inline(__always)
    func modifyChunk<T>(_ chunk: Int, _ body: (UnsafeMutablePointer<UInt16>) throws -> (result: T, changed: Bool)) rethrows -> T {
        try locks.withWriteLock(for: chunk) {
            let entries = allocatedChunk(chunk)
            let (result, changed) = try body(entries)
            if changed { dirtyFlags[chunk] = true }
            return result
        }
    }

    func entry(of cluster: Int) -> IndexEntry {
        withChunk(cluster / Self.chunkSize) { entries in
            IndexEntry(rawValue: entries?[cluster % Self.chunkSize] ?? 0)
        }
    }

    // MARK: Exclusive access (while building, or structure lock held for writing)

    /// Sets an entry without locking; only while the index is being built or the structure is locked.
    func setUnlocked(_ cluster: Int, _ entry: IndexEntry) {
        let entries = allocatedChunk(cluster / Self.chunkSize)
        entries[cluster % Self.chunkSize] = entry.rawValue
    }

    func grow(toClusterCount newCount: Int) {
        guard newCount > clusterCount else { return }
        let newChunkCount = (newCount + Self.chunkSize - 1) / Self.chunkSize
        if newChunkCount > chunkCount {
            let newChunks = UnsafeMutablePointer<UnsafeMutablePointer<UInt16>?>.allocate(capacity: newChunkCount)
            newChunks.initialize(repeating: nil, count: newChunkCount)
            newChunks.update(from: chunks, count: chunkCount)
            let newDirty = UnsafeMutablePointer<Bool>.allocate(capacity: newChunkCount)
            newDirty.initialize(repeating: false, count: newChunkCount)
            newDirty.update(from: dirtyFlags, count: chunkCount)
            chunks.deallocate()
            dirtyFlags.deallocate()
            chunks = newChunks
            dirtyFlags = newDirty
            chunkCount = newChunkCount
        }
        clusterCount = newCount
    }

    /// Chunks whose head entries changed since the last call; clears their flags.
    func takeDirtyChunks() -> [Int] {
        var result: [Int] = []
        for chunk in 0..<chunkCount where dirtyFlags[chunk] {
            dirtyFlags[chunk] = false
            result.append(chunk)
        }
        return result
    }

    func markDirty(_ chunk: Int) {
        dirtyFlags[chunk] = true
    }

    /// The head layer's map page for a chunk: the entries the layer at `headPosition` owns.
    func headMapPage(_ chunk: Int, headPosition: Int, into page: UnsafeMutableRawBufferPointer) {
        page.initializeMemory(as: UInt8.self, repeating: 0)
        guard let entries = chunks[chunk] else { return }
        for index in 0..<Self.chunkSize {
            let entry = IndexEntry(rawValue: entries[index])
            if entry.position == headPosition {
                page[index] = entry.isZero ? ClusterState.zero.rawValue : ClusterState.data.rawValue
            }
        }
    }

    /// Rewrites every entry (flatten renumbers positions when lower layers leave the chain).
    func transformAll(_ transform: (IndexEntry) -> IndexEntry) {
        for chunk in 0..<chunkCount {
            guard let entries = chunks[chunk] else { continue }
            for index in 0..<Self.chunkSize {
                entries[index] = transform(IndexEntry(rawValue: entries[index])).rawValue
            }
        }
    }

    private func allocatedChunk(_ chunk: Int) -> UnsafeMutablePointer<UInt16> {
        if let entries = chunks[chunk] { return entries }
        let entries = UnsafeMutablePointer<UInt16>.allocate(capacity: Self.chunkSize)
        entries.initialize(repeating: 0, count: Self.chunkSize)
        chunks[chunk] = entries
        return entries
    }
}
