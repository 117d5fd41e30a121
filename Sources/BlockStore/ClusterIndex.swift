import Synchronization

/// One entry of the cluster index: which layer of the chain answers for a cluster.
/// Raw value 0: no layer holds it (reads zeros). 0xFFFF: the cluster is mixed (its subclusters
/// come from different layers; see `SubclusterEntries`). Otherwise the low 15 bits are the
/// layer's position in the chain plus one (0 = bottom), and bit 15 says the layer recorded a
/// zero cluster.
struct IndexEntry: Equatable, Sendable {
    var rawValue: UInt16

    static let none = IndexEntry(rawValue: 0)
    static let mixed = IndexEntry(rawValue: 0xFFFF)
    private static let zeroFlag: UInt16 = 0x8000

    init(rawValue: UInt16) { self.rawValue = rawValue }

    init(position: Int, state: ClusterState) {
        precondition((state == .data || state == .zero) && position < 0x7FFE)
        rawValue = UInt16(position + 1) | (state == .zero ? Self.zeroFlag : 0)
    }

    var isMixed: Bool { rawValue == 0xFFFF }

    /// Chain position of the owning layer, nil when no layer holds the cluster or it is mixed.
    var position: Int? {
        let value = rawValue & ~Self.zeroFlag
        return value == 0 || isMixed ? nil : Int(value) - 1
    }

    var isZero: Bool { rawValue & Self.zeroFlag != 0 && !isMixed }
    /// True when some layer holds data for the cluster (mixed clusters always have some).
    var hasData: Bool { rawValue != 0 && !isZero }
}

/// How a cluster divides into subclusters, the unit of copy-up: a write into part of an
/// inherited cluster copies only the subclusters it touches.
struct Subclusters {
    /// The most subclusters a cluster has (the width of a map entry's mask).
    static let maximum = 16

    let count: Int
    let shift: Int
    var size: Int { 1 << shift }
    var fullMask: UInt16 { count == 16 ? 0xFFFF : UInt16((1 << count) - 1) }

    /// 4 KiB subclusters, at most 16 per cluster (larger subclusters past 64 KiB clusters).
    init(clusterSize: Int) {
        count = max(1, min(Self.maximum, clusterSize / 4096))
        shift = (clusterSize / count).trailingZeroBitCount
    }
}

/// The per-subcluster entries of one mixed cluster: plain index entries (never mixed).
struct SubclusterEntries {
    let base: UnsafeMutablePointer<Atomic<UInt16>>

    subscript(subcluster: Int) -> IndexEntry {
        get { IndexEntry(rawValue: base[subcluster].load(ordering: .acquiring)) }
        nonmutating set { base[subcluster].store(newValue.rawValue, ordering: .releasing) }
    }

    /// Subclusters (of the first `count`) whose entry is `entry`, as a mask.
    func mask(of entry: IndexEntry, count: Int) -> UInt16 {
        var mask: UInt16 = 0
        for subcluster in 0..<count where self[subcluster] == entry { mask |= 1 << subcluster }
        return mask
    }
}

/// The entries of one chunk of the index. Loads and stores are atomic, so readers need no lock;
/// writers are serialized by the chunk's lock and publish an entry only after its data is written.
///
/// Each slot has a record of subcluster entries, allocated in pages on first use; it is read
/// only while the slot's entry says mixed. A record is filled before its entry turns mixed and
/// stays allocated (and attached to its slot) for the chunk's lifetime, so a reader that saw
/// "mixed" always finds valid entries, at worst newer ones.
struct ChunkEntries {
    static let recordsPerPage = 64
    static let recordPages = ClusterIndex.chunkSize / recordsPerPage

    let base: UnsafeMutablePointer<Atomic<UInt16>>
    /// `recordPages` addresses of record pages, 0 until allocated.
    let pages: UnsafeMutablePointer<Atomic<UInt>>

    subscript(slot: Int) -> UInt16 {
        get { base[slot].load(ordering: .acquiring) }
        nonmutating set { base[slot].store(newValue, ordering: .releasing) }
    }

    /// The record of a slot whose entry was seen mixed.
    func record(_ slot: Int) -> SubclusterEntries {
        let address = pages[slot / Self.recordsPerPage].load(ordering: .acquiring)
        let page = UnsafeMutablePointer<Atomic<UInt16>>(bitPattern: address)!
        return SubclusterEntries(base: page + (slot % Self.recordsPerPage) * Subclusters.maximum)
    }

    /// The record of a slot, allocating its page if needed (chunk lock held, or exclusive access).
    func allocatedRecord(_ slot: Int) -> SubclusterEntries {
        let page = slot / Self.recordsPerPage
        if pages[page].load(ordering: .acquiring) == 0 {
            let count = Self.recordsPerPage * Subclusters.maximum
            let memory = UnsafeMutablePointer<Atomic<UInt16>>.allocate(capacity: count)
            for index in 0..<count { (memory + index).initialize(to: Atomic(0)) }
            pages[page].store(UInt(bitPattern: memory), ordering: .releasing)
        }
        return record(slot)
    }

    /// Turns a slot mixed: every subcluster first gets the slot's current (plain) entry.
    func makeMixed(_ slot: Int) -> SubclusterEntries {
        let current = IndexEntry(rawValue: self[slot])
        precondition(!current.isMixed)
        let record = allocatedRecord(slot)
        for subcluster in 0..<Subclusters.maximum { record[subcluster] = current }
        self[slot] = IndexEntry.mixed.rawValue
        return record
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
        return address == 0 ? nil : Self.chunkEntries(at: address)
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

    /// Gives the subclusters in `mask` to the layer at `position`, over what lies below.
    func setPartialUnlocked(_ cluster: Int, position: Int, mask: UInt16) {
        let entries = allocatedChunk(cluster / Self.chunkSize)
        let slot = cluster % Self.chunkSize
        let record = IndexEntry(rawValue: entries[slot]).isMixed ? entries.record(slot) : entries.makeMixed(slot)
        for subcluster in 0..<Subclusters.maximum where mask & (1 << subcluster) != 0 {
            record[subcluster] = IndexEntry(position: position, state: .data)
        }
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

    /// The head layer's map entry for a cluster: what the layer at `headPosition` holds of it.
    func headMapEntry(_ entries: ChunkEntries?, slot: Int, headPosition: Int, subclusters: Subclusters) -> MapEntry {
        guard let entries else { return MapEntry(.unallocated) }
        let entry = IndexEntry(rawValue: entries[slot])
        if entry.isMixed {
            let mask = entries.record(slot).mask(of: IndexEntry(position: headPosition, state: .data), count: subclusters.count)
            if mask == 0 { return MapEntry(.unallocated) }
            return mask == subclusters.fullMask ? MapEntry(.data) : MapEntry(.partial, subclusterMask: mask)
        }
        guard entry.position == headPosition else { return MapEntry(.unallocated) }
        return MapEntry(entry.isZero ? .zero : .data)
    }

    /// Rewrites every entry, and every subcluster entry of mixed clusters (flatten renumbers
    /// positions when lower layers leave the chain).
    func transformAll(_ transform: (IndexEntry) -> IndexEntry) {
        for chunk in 0..<chunkCount {
            guard let entries = entries(chunk) else { continue }
            for slot in 0..<Self.chunkSize {
                let entry = IndexEntry(rawValue: entries[slot])
                if entry.isMixed {
                    let record = entries.record(slot)
                    for subcluster in 0..<Subclusters.maximum { record[subcluster] = transform(record[subcluster]) }
                } else {
                    entries[slot] = transform(entry).rawValue
                }
            }
        }
    }

    /// Allocates a chunk's entries on first write; called with its lock held (or exclusively).
    /// One allocation holds the record page table, then the entries.
    private func allocatedChunk(_ chunk: Int) -> ChunkEntries {
        if let entries = entries(chunk) { return entries }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
        let pages = memory.bindMemory(to: Atomic<UInt>.self, capacity: ChunkEntries.recordPages)
        for page in 0..<ChunkEntries.recordPages { (pages + page).initialize(to: Atomic(0)) }
        let base = (memory + Self.pageTableBytes).bindMemory(to: Atomic<UInt16>.self, capacity: Self.chunkSize)
        for slot in 0..<Self.chunkSize { (base + slot).initialize(to: Atomic(0)) }
        chunks[chunk].store(UInt(bitPattern: memory), ordering: .releasing)
        return ChunkEntries(base: base, pages: pages)
    }

    private static let pageTableBytes = ChunkEntries.recordPages * MemoryLayout<Atomic<UInt>>.stride
    private static let chunkBytes = pageTableBytes + chunkSize * MemoryLayout<Atomic<UInt16>>.stride

    @inline(__always)
    private static func chunkEntries(at address: UInt) -> ChunkEntries {
        let memory = UnsafeMutableRawPointer(bitPattern: address)!
        return ChunkEntries(
            base: (memory + pageTableBytes).assumingMemoryBound(to: Atomic<UInt16>.self),
            pages: memory.assumingMemoryBound(to: Atomic<UInt>.self))
    }

    private static func deallocateEntries(_ entries: ChunkEntries) {
        for page in 0..<ChunkEntries.recordPages {
            let address = entries.pages[page].load(ordering: .relaxed)
            guard address != 0 else { continue }
            let records = UnsafeMutablePointer<Atomic<UInt16>>(bitPattern: address)!
            records.deinitialize(count: ChunkEntries.recordsPerPage * Subclusters.maximum)
            records.deallocate()
        }
        entries.base.deinitialize(count: chunkSize)
        entries.pages.deinitialize(count: ChunkEntries.recordPages)
        UnsafeMutableRawPointer(entries.pages).deallocate()
    }

    private static func allocateChunkTable(_ count: Int) -> UnsafeMutablePointer<Atomic<UInt>> {
        let table = UnsafeMutablePointer<Atomic<UInt>>.allocate(capacity: count)
        for chunk in 0..<count { (table + chunk).initialize(to: Atomic(0)) }
        return table
    }
}
