import Synchronization

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

/// The entries of one chunk of the index. Loads and stores are atomic, so readers need no lock;
/// writers are serialized by the chunk's lock and publish an entry only after its data is written.
struct ChunkEntries {
    let base: UnsafeMutablePointer<Atomic<UInt16>>

    subscript(slot: Int) -> UInt16 {
        get { base[slot].load(ordering: .acquiring) }
        nonmutating set { base[slot].store(newValue, ordering: .releasing) }
    }
}

/// The per-open-volume map from cluster to owning layer: O(1) lookup whatever the chain depth.
///
/// Clusters are grouped in chunks of `AllocationMapFile.entriesPerPage` (one map page each),
/// allocated on first use so a sparse or unwritten volume costs almost nothing. Readers load
/// entries atomically without any lock. Writers of a chunk hold one of a fixed pool of striped
/// locks, so a copy-up of a cluster is never interleaved with another write to that chunk.
/// Changing the number of chunks or renumbering positions requires the volume's structure lock
/// held for writing (no I/O in flight).
final class ClusterIndex: @unchecked Sendable {
    static let chunkSize = AllocationMapFile.entriesPerPage

    /// Per chunk: the address of its entries, 0 until the chunk is first written.
    private var chunks: UnsafeMutablePointer<Atomic<UInt>>
    /// Per chunk: whether head entries changed since the head map was last written.
    private var dirtyFlags: UnsafeMutablePointer<Bool>
    private(set) var chunkCount: Int
    private(set) var clusterCount: Int
    private let locks = StripedLocks(count: 256)

    init(clusterCount: Int) {
        self.clusterCount = clusterCount
        chunkCount = (clusterCount + Self.chunkSize - 1) / Self.chunkSize
        chunks = Self.allocateChunkTable(max(chunkCount, 1))
        dirtyFlags = .allocate(capacity: max(chunkCount, 1))
        dirtyFlags.initialize(repeating: false, count: max(chunkCount, 1))
    }

    deinit {
        for chunk in 0..<chunkCount { entries(chunk).map { Self.deallocateEntries($0) } }
        chunks.deinitialize(count: max(chunkCount, 1))
        chunks.deallocate()
        dirtyFlags.deallocate()
    }

    // MARK: Concurrent access (structure lock held for reading)

    /// The chunk's entries, nil when the chunk was never written. No lock: entries are atomic.
    @inline(__always)
    func entries(_ chunk: Int) -> ChunkEntries? {
        let address = chunks[chunk].load(ordering: .acquiring)
        return address == 0 ? nil : ChunkEntries(base: UnsafeMutablePointer(bitPattern: address)!)
    }

    /// Calls `body` with the chunk's entries, allocating them if needed, under its write lock.
    /// `body` returns whether it changed a head entry; the chunk is then marked for the next flush.
    @inline(__always)
    func modifyChunk<T>(_ chunk: Int, _ body: (ChunkEntries) throws -> (result: T, changed: Bool)) rethrows -> T {
        try locks.withWriteLock(for: chunk) {
            let (result, changed) = try body(allocatedChunk(chunk))
            if changed { dirtyFlags[chunk] = true }
            return result
        }
    }

    func entry(of cluster: Int) -> IndexEntry {
        IndexEntry(rawValue: entries(cluster / Self.chunkSize)?[cluster % Self.chunkSize] ?? 0)
    }

    // MARK: Exclusive access (while building, or structure lock held for writing)

    /// Sets an entry without locking; only while the index is being built or the structure is locked.
    func setUnlocked(_ cluster: Int, _ entry: IndexEntry) {
        allocatedChunk(cluster / Self.chunkSize)[cluster % Self.chunkSize] = entry.rawValue
    }

    func grow(toClusterCount newCount: Int) {
        guard newCount > clusterCount else { return }
        let newChunkCount = (newCount + Self.chunkSize - 1) / Self.chunkSize
        if newChunkCount > chunkCount {
            let newChunks = Self.allocateChunkTable(newChunkCount)
            for chunk in 0..<chunkCount {
                newChunks[chunk].store(chunks[chunk].load(ordering: .relaxed), ordering: .relaxed)
            }
            let newDirty = UnsafeMutablePointer<Bool>.allocate(capacity: newChunkCount)
            newDirty.initialize(repeating: false, count: newChunkCount)
            newDirty.update(from: dirtyFlags, count: chunkCount)
            chunks.deinitialize(count: max(chunkCount, 1))
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
        guard let entries = entries(chunk) else { return }
        for slot in 0..<Self.chunkSize {
            let entry = IndexEntry(rawValue: entries[slot])
            if entry.position == headPosition {
                page[slot] = entry.isZero ? ClusterState.zero.rawValue : ClusterState.data.rawValue
            }
        }
    }

    /// Rewrites every entry (flatten renumbers positions when lower layers leave the chain).
    func transformAll(_ transform: (IndexEntry) -> IndexEntry) {
        for chunk in 0..<chunkCount {
            guard let entries = entries(chunk) else { continue }
            for slot in 0..<Self.chunkSize {
                entries[slot] = transform(IndexEntry(rawValue: entries[slot])).rawValue
            }
        }
    }

    /// Allocates a chunk's entries on first write; called with its lock held (or exclusively).
    private func allocatedChunk(_ chunk: Int) -> ChunkEntries {
        if let entries = entries(chunk) { return entries }
        let base = UnsafeMutablePointer<Atomic<UInt16>>.allocate(capacity: Self.chunkSize)
        for slot in 0..<Self.chunkSize { (base + slot).initialize(to: Atomic(0)) }
        chunks[chunk].store(UInt(bitPattern: base), ordering: .releasing)
        return ChunkEntries(base: base)
    }

    private static func deallocateEntries(_ entries: ChunkEntries) {
        entries.base.deinitialize(count: chunkSize)
        entries.base.deallocate()
    }

    private static func allocateChunkTable(_ count: Int) -> UnsafeMutablePointer<Atomic<UInt>> {
        let table = UnsafeMutablePointer<Atomic<UInt>>.allocate(capacity: count)
        for chunk in 0..<count { (table + chunk).initialize(to: Atomic(0)) }
        return table
    }
}
