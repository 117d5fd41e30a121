import GRDB

/// Copies a snapshot from another node into this store: the layers of its chain that are not
/// here yet are written from extents, then `commit()` makes them and the snapshot visible in one
/// catalog transaction, once every layer is complete and durable. Until then the files have no
/// catalog row: `discard()` removes them, and after a crash the store's open-time reconcile
/// collects them. One task drives an import; it is not for concurrent use.
public final class ReplicaImport: @unchecked Sendable {
    public let manifest: ReplicaManifest
    public let originNode: String
    /// The layers to fetch, bottom first; the ones below them are here already and are shared.
    public let missingLayers: [LayerDescriptor]
    /// The uuid of the highest layer of the chain already here (the parent of the first missing one).
    let presentTopUUID: String?
    private let store: BlockStore
    private var writers: [String: LayerWriter] = [:]
    private var ended = false

    init(store: BlockStore, manifest: ReplicaManifest, originNode: String, missingLayers: [LayerDescriptor], presentTopUUID: String?) {
        self.store = store
        self.manifest = manifest
        self.originNode = originNode
        self.missingLayers = missingLayers
        self.presentTopUUID = presentTopUUID
    }

    deinit { if !ended { discard() } }

    /// Bytes the missing layers hold on the sending node.
    public var bytesToFetch: UInt64 { missingLayers.reduce(0) { $0 + $1.allocatedBytes } }

    /// Starts (or restarts, discarding what was written) a missing layer.
    public func beginLayer(_ uuid: String) throws {
        guard !ended else { throw StoreError(.invalidArgument, "the import of \(manifest.snapshotID) has ended") }
        guard missingLayers.contains(where: { $0.uuid == uuid }) else {
            throw StoreError(.invalidArgument, "layer \(uuid) is not one this import fetches")
        }
        if let old = writers.removeValue(forKey: uuid) { old.remove(from: store) }
        writers[uuid] = try LayerWriter(store: store, size: manifest.size, clusterSize: manifest.clusterSize)
    }

    /// Writes one extent of a layer: `bytes` for data (exactly `extent.length` of them), none for zeros.
    public func write(layer uuid: String, extent: LayerExtent, bytes: UnsafeRawBufferPointer) throws {
        guard let writer = writers[uuid], !ended else { throw StoreError(.invalidArgument, "layer \(uuid) was not begun") }
        try writer.write(extent, bytes: bytes)
    }

    /// Makes a layer durable (data, then map, then the directory entries).
    public func finishLayer(_ uuid: String) throws {
        guard let writer = writers[uuid], !ended else { throw StoreError(.invalidArgument, "layer \(uuid) was not begun") }
        try writer.finish()
    }

    /// Makes the copied layers and the replica snapshot visible. Every missing layer must have
    /// been finished. The import has ended afterwards, whatever the outcome.
    @discardableResult
    public func commit() throws -> Snapshot {
        guard !ended else { throw StoreError(.invalidArgument, "the import of \(manifest.snapshotID) has ended") }
        defer { if !ended { discard() } }
        let layers = try missingLayers.map { descriptor -> (LayerDescriptor, localID: Int64, allocatedBytes: UInt64) in
            guard let writer = writers[descriptor.uuid], writer.isFinished else {
                throw StoreError(.invalidArgument, "layer \(descriptor.uuid) of \(manifest.snapshotID) is not complete")
            }
            return (descriptor, localID: writer.layerID, allocatedBytes: writer.allocatedBytes)
        }
        let snapshot = try store.commitReplica(self, layers: layers)
        for writer in writers.values { writer.close() }
        writers.removeAll()
        ended = true
        return snapshot
    }

    /// Removes every file written so far; nothing of the import stays.
    public func discard() {
        guard !ended else { return }
        ended = true
        for writer in writers.values { writer.remove(from: store) }
        writers.removeAll()
    }
}

/// The files of one layer being copied in, and the map entries its extents make.
final class LayerWriter {
    let layerID: Int64
    private let files: LayerFiles
    private let clusterSize: UInt64
    private let subclusters: Subclusters
    private let limit: UInt64
    private var entries: [Int: MapEntry] = [:]
    private(set) var isFinished = false
    private(set) var allocatedBytes: UInt64 = 0
    /// Where the last extent written ends: a layer's extents come in offset order, each once,
    /// so one that starts before it is a sender's error (a chunk sent twice, or out of place).
    private var writtenUpTo: UInt64 = 0
    private var closed = false
    /// Bytes written since writeback was last started.
    private var unsubmittedBytes = 0
    /// A copied layer's data is sent to the disk every this many bytes while it arrives, so
    /// that `finish()`'s fdatasync does not write the whole layer after the transfer.
    static let writebackBytes = 8 << 20
    /// The data file opened again for direct I/O (nil where the filesystem refuses it, or once a
    /// direct write was refused). A copied layer is written once and read later by clones: going
    /// past the page cache spares the copy into it (on a VM whose memory was never touched, the
    /// largest cost of a transfer on the receiving node: 47% of its CPU in a profile) and the
    /// eviction of pages running volumes use; the final fdatasync then has only metadata to write.
    private var direct: SystemFile?
    /// Where bytes are copied for a direct write (direct I/O needs an aligned address); one
    /// buffer, reused, since a layer is written by one caller at a time.
    private var directBuffer: UnsafeMutableRawBufferPointer?
    static let directAlignment = 4096
    static let directBufferBytes = 1 << 20

    init(store: BlockStore, size: UInt64, clusterSize: UInt32) throws {
        layerID = store.allocateLayerID()
        try store.layerDirectory.createLayer(layerID, clusterSize: clusterSize)
        do {
            files = try store.layerDirectory.openLayer(layerID, writable: true)
        } catch {
            store.removeLayerFiles([layerID])
            throw error
        }
        direct = SystemFile.openForDirectWrites(store.layerDirectory.dataPath(layerID))
        self.clusterSize = UInt64(clusterSize)
        subclusters = Subclusters(clusterSize: Int(clusterSize))
        limit = (size + UInt64(clusterSize) - 1) / UInt64(clusterSize) * UInt64(clusterSize)
    }

    func write(_ extent: LayerExtent, bytes: UnsafeRawBufferPointer) throws {
        guard !isFinished else { throw StoreError(.invalidArgument, "layer \(layerID) is already complete") }
        let unit = extent.isZero ? clusterSize : UInt64(subclusters.size)
        guard extent.length > 0, extent.offset % unit == 0, extent.length % unit == 0,
            extent.offset <= limit, extent.length <= limit - extent.offset
        else {
            throw StoreError(.invalidArgument, "extent \(extent.offset)+\(extent.length) is misaligned or outside the volume")
        }
        guard extent.offset >= writtenUpTo else {
            throw StoreError(.invalidArgument, "extent \(extent.offset)+\(extent.length) starts before the end of an earlier one (\(writtenUpTo)): extents come in offset order, each once")
        }
        writtenUpTo = extent.offset + extent.length
        if extent.isZero {
            guard bytes.isEmpty else { throw StoreError(.invalidArgument, "a zero extent carries no bytes") }
            for cluster in Int(extent.offset / clusterSize)..<Int((extent.offset + extent.length) / clusterSize) {
                if let entry = entries[cluster], entry.state != .zero {
                    throw StoreError(.invalidArgument, "cluster \(cluster) is both data and zeros")
                }
                entries[cluster] = MapEntry(.zero)
            }
            return
        }
        guard UInt64(bytes.count) == extent.length else {
            throw StoreError(.invalidArgument, "extent \(extent.offset)+\(extent.length) came with \(bytes.count) bytes")
        }
        try writeData(bytes, at: extent.offset)
        var offset = extent.offset
        while offset < extent.offset + extent.length {
            let cluster = Int(offset / clusterSize)
            let bit = UInt16(1) << UInt16((offset % clusterSize) >> UInt64(subclusters.shift))
            let old = entries[cluster] ?? MapEntry(.unallocated)
            var mask: UInt16
            switch old.state {
            case .zero: throw StoreError(.invalidArgument, "cluster \(cluster) is both data and zeros")
            case .data: mask = subclusters.fullMask
            case .partial: mask = old.subclusterMask
            case .unallocated: mask = 0
            }
            if mask & bit == 0 { allocatedBytes += UInt64(subclusters.size) }
            mask |= bit
            entries[cluster] = mask == subclusters.fullMask ? MapEntry(.data) : MapEntry(.partial, subclusterMask: mask)
            offset += UInt64(subclusters.size)
        }
    }

    /// Writes data bytes directly where they are aligned and the filesystem allows it; what is
    /// left goes through the page cache.
    private func writeData(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let written = try writeDirectly(bytes, at: offset)
        guard written < bytes.count else { return }
        try bufferedWrite(UnsafeRawBufferPointer(rebasing: bytes[written...]), at: offset + UInt64(written))
    }

    /// Writes what it can of `bytes` with direct I/O, through the reused aligned buffer, and says
    /// how much: nothing when they are not aligned or direct I/O is off; a refusal turns it off
    /// for the rest of the layer.
    private func writeDirectly(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
        let alignment = Self.directAlignment
        guard let file = direct, offset % UInt64(alignment) == 0, bytes.count % alignment == 0 else { return 0 }
        let buffer = directBuffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: Self.directBufferBytes, alignment: alignment)
        directBuffer = buffer
        var done = 0
        while done < bytes.count {
            let count = min(buffer.count, bytes.count - done)
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + count]))
            guard try file.writeDirect(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), at: offset + UInt64(done)) else {
                file.close()
                direct = nil
                break
            }
            done += count
        }
        return done
    }

    /// Writes through the page cache, starting writeback every `writebackBytes`.
    private func bufferedWrite(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try files.data.write(bytes, at: offset)
        unsubmittedBytes += bytes.count
        if unsubmittedBytes >= Self.writebackBytes {
            files.data.startWriteback()
            unsubmittedBytes = 0
        }
    }

    /// Data first, then the map that describes it, then the directory entries of both files.
    func finish() throws {
        guard !isFinished else { return }
        try files.data.synchronizeData()
        let perPage = AllocationMapFile.entriesPerPage
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: files.map.pageBytes, alignment: 16)
        defer { page.deallocate() }
        for pageNumber in Set(entries.keys.map { $0 / perPage }).sorted() {
            files.map.encodePage({ slot in self.entries[pageNumber * perPage + slot] ?? MapEntry(.unallocated) }, into: page)
            try files.map.writePage(pageNumber, entries: UnsafeRawBufferPointer(page))
        }
        try files.map.file.synchronizeData()
        isFinished = true
    }

    func close() {
        guard !closed else { return }
        closed = true
        direct?.close()
        direct = nil
        directBuffer?.deallocate()
        directBuffer = nil
        files.close()
    }

    func remove(from store: BlockStore) {
        close()
        store.removeLayerFiles([layerID])
    }
}
