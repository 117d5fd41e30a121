import Foundation
import GRDB

/// Creating, reading, growing, listing and deleting volumes.
extension BlockStore {
    /// Largest number of clusters in a volume (bounds the memory of an open volume's index).
    static let maximumClusterCount: UInt64 = 1 << 32

    /// Creates a volume, empty or from a snapshot or another volume. Idempotent by name: the same
    /// name with the same size, cluster size, source, parameters and sharing returns the existing
    /// volume; the same name with anything different is `.alreadyExists`. O(1) in size and clone
    /// count. A `multiNode` volume may be staged on other nodes, which reach it through its owner.
    public func createVolume(
        name: String, size: UInt64, clusterSize: UInt32? = nil, source: VolumeSource? = nil,
        parameters: [String: String] = [:], multiNode: Bool = false
    ) throws -> Volume {
        let traits = VolumeTraits(parameters: parameters, multiNode: multiNode)
        try Self.validateName(name)
        guard size > 0 else { throw StoreError(.invalidArgument, "volume size must be positive") }
        if let clusterSize, !Self.isValidClusterSize(clusterSize) {
            throw StoreError(.invalidArgument, "cluster size \(clusterSize) is not a power of two in 4 KiB–1 MiB")
        }
        if case .volume(let volumeID) = source {
            // Freezes the source's head, which waits for its I/O: not for a shared transaction.
            return try controlLock.withLock { _ in
                try throwIfClosed()
                if let existing = try catalog.read({ try $0.volumeRow(named: name) }) {
                    return try catalog.read { try matchExisting(existing, size: size, clusterSize: clusterSize, source: source, traits: traits, $0) }
                }
                return try createCloneOfVolumeLocked(
                    name: name, size: size, clusterSize: clusterSize, volumeID: volumeID, traits: traits)
            }
        }
        let volume = try creations.perform({ [self] db in
            if let existing = try db.volumeRow(named: name) {
                return try matchExisting(existing, size: size, clusterSize: clusterSize, source: source, traits: traits, db)
            }
            guard case .snapshot(let snapshotID) = source else {
                let clusterSize = clusterSize ?? options.defaultClusterSize
                try Self.checkSize(size, clusterSize: clusterSize)
                return try insertVolume(
                    name: name, size: size, clusterSize: clusterSize, parentLayerID: nil, source: nil, traits: traits, db)
            }
            return try createCloneOfSnapshot(
                name: name, size: size, clusterSize: clusterSize, snapshotID: snapshotID, traits: traits, db)
        }, commitGroup: commitCreations)
        scheduleFlattenIfDeep(volume)
        return volume
    }

    /// Commits a group of creations in one transaction (see `GroupCommit`).
    private func commitCreations(_ group: [GroupCommit<Volume>.Ticket]) throws {
        try controlLock.withLock { _ in
            try throwIfClosed()
            try catalog.write { db in
                for ticket in group { try GroupCommit.runInSavepoint(ticket, db) }
            }
        }
    }

    /// The existing volume of that name if the request matches it (idempotent create), else `.alreadyExists`.
    func matchExisting(
        _ existing: VolumeRow, size: UInt64, clusterSize: UInt32?, source: VolumeSource?, traits: VolumeTraits, _ db: Database
    ) throws -> Volume {
        let effectiveClusterSize = clusterSize ?? (source == nil ? options.defaultClusterSize : existing.clusterSize)
        guard existing.size == size, existing.clusterSize == effectiveClusterSize, existing.source == source,
            existing.parameters == traits.parameters, existing.multiNode == traits.multiNode
        else { throw StoreError(.alreadyExists, "a different volume named \(existing.name) exists") }
        return try makeVolume(existing, db)
    }

    private func createCloneOfSnapshot(
        name: String, size: UInt64, clusterSize: UInt32?, snapshotID: String, traits: VolumeTraits, _ db: Database
    ) throws -> Volume {
        guard Identifier.isSnapshotID(snapshotID), let snapshot = try db.snapshotRow(id: snapshotID), !snapshot.hidden else {
            throw StoreError.notFound("snapshot \(snapshotID)")
        }
        let layer = try db.requireLayer(snapshot.layerID)
        try checkCloneShape(size: size, clusterSize: clusterSize, sourceSize: snapshot.size, sourceClusterSize: layer.clusterSize)
        try checkDepth(layer.depth + 1)
        return try insertVolume(
            name: name, size: size, clusterSize: layer.clusterSize, parentLayerID: layer.id,
            source: .snapshot(id: snapshotID), traits: traits, db)
    }

    /// A clone of a volume: an implicit hidden snapshot of the source, then a clone of it.
    private func createCloneOfVolumeLocked(
        name: String, size: UInt64, clusterSize: UInt32?, volumeID: String, traits: VolumeTraits
    ) throws -> Volume {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        let (sourceRow, sourceHead) = try catalog.read { db -> (VolumeRow, LayerRow) in
            guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
            return (row, try db.requireLayer(row.headLayerID))
        }
        try checkCloneShape(size: size, clusterSize: clusterSize, sourceSize: sourceRow.size, sourceClusterSize: sourceRow.clusterSize)
        try checkDepth(sourceHead.depth + 1)
        let cloneHeadID = allocateLayerID()
        let cloneID = Identifier.newVolumeID()
        let hiddenSnapshotID = Identifier.newSnapshotID()
        let createdAt = Self.now()
        try freezeHeadsLocked([sourceRow]) { db, frozen in
                let frozenLayer = frozen[0]
                try db.insertSnapshot(SnapshotRow(
                    id: hiddenSnapshotID, name: nil, sourceVolumeID: volumeID, layerID: frozenLayer.id,
                    size: sourceRow.size, groupID: nil, hidden: true, createdAt: createdAt))
                try db.addReference(to: frozenLayer.id)
                try db.insertLayer(LayerRow(
                    id: cloneHeadID, parentID: frozenLayer.id, depth: frozenLayer.depth + 1, clusterSize: sourceRow.clusterSize,
                    frozen: false, refCount: 1, allocatedBytes: 0, createdAt: createdAt))
                try db.addReference(to: frozenLayer.id)
                try db.insertVolume(VolumeRow(
                    id: cloneID, name: name, size: size, clusterSize: sourceRow.clusterSize, headLayerID: cloneHeadID,
                    source: .volume(id: volumeID), hiddenSnapshotID: hiddenSnapshotID, parameters: traits.parameters,
                    multiNode: traits.multiNode, createdAt: createdAt))
        }
        let volume = try catalog.read { db in try makeVolume(try db.volumeRow(id: cloneID)!, db) }
        scheduleFlattenIfDeep(volume)
        if let source = try? catalog.read({ db in try makeVolume(try db.volumeRow(id: volumeID)!, db) }) {
            scheduleFlattenIfDeep(source)
        }
        return volume
    }

    /// Adds a fresh head layer (over `parentLayerID` when cloning) and the volume row; the head's
    /// files are created when the volume is first opened.
    private func insertVolume(
        name: String, size: UInt64, clusterSize: UInt32, parentLayerID: Int64?, source: VolumeSource?,
        traits: VolumeTraits, _ db: Database
    ) throws -> Volume {
        let headID = allocateLayerID()
        let volumeID = Identifier.newVolumeID()
        let createdAt = Self.now()
        var depth = 1
        if let parentLayerID {
            depth = try db.requireLayer(parentLayerID).depth + 1
            try db.addReference(to: parentLayerID)
        }
        try db.insertLayer(LayerRow(
            id: headID, parentID: parentLayerID, depth: depth, clusterSize: clusterSize, frozen: false,
            refCount: 1, allocatedBytes: 0, createdAt: createdAt))
        try db.insertVolume(VolumeRow(
            id: volumeID, name: name, size: size, clusterSize: clusterSize, headLayerID: headID, source: source,
            hiddenSnapshotID: nil, parameters: traits.parameters, multiNode: traits.multiNode, createdAt: createdAt))
        return try makeVolume(try db.volumeRow(id: volumeID)!, db)
    }

    public func volume(id: String) throws -> Volume {
        guard Identifier.isVolumeID(id) else { throw StoreError.notFound("volume \(id)") }
        return try catalog.read { db in
            guard let row = try db.volumeRow(id: id) else { throw StoreError.notFound("volume \(id)") }
            return try makeVolume(row, db)
        }
    }

    public func volume(named name: String) throws -> Volume? {
        try catalog.read { db in try db.volumeRow(named: name).map { try makeVolume($0, db) } }
    }

    /// Grows a volume (open or not); a smaller size is `.outOfRange`, the same size a no-op.
    public func expandVolume(id: String, to newSize: UInt64) throws -> Volume {
        guard Identifier.isVolumeID(id) else { throw StoreError.notFound("volume \(id)") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            guard let row = try catalog.read({ try $0.volumeRow(id: id) }) else { throw StoreError.notFound("volume \(id)") }
            guard newSize >= row.size else {
                throw StoreError(.outOfRange, "volume \(id) is \(row.size) bytes; volumes never shrink (asked \(newSize))")
            }
            if newSize > row.size {
                try Self.checkSize(newSize, clusterSize: row.clusterSize)
                let commit = { try self.catalog.write { try $0.setSize(newSize, ofVolume: id) } }
                if let open = openVolume(id) { try open.expand(to: newSize, commit: commit) } else { try commit() }
            }
            return try volume(id: id)
        }
    }

    /// Deletes a volume. Its snapshots and clones keep the layers they need; the volume's own
    /// layers are freed when nothing else references them. `.busy` while a handle is open or
    /// another node stages it.
    public func deleteVolume(id: String) throws {
        guard Identifier.isVolumeID(id) else { throw StoreError.notFound("volume \(id)") }
        try controlLock.withLock { _ in
            try throwIfClosed()
            guard let row = try catalog.read({ try $0.volumeRow(id: id) }) else { throw StoreError.notFound("volume \(id)") }
            let stagers = try catalog.read { try $0.remoteStagers(ofVolume: id) }
            guard stagers.isEmpty else { throw StoreError(.busy, "volume \(id) is staged on \(stagers.joined(separator: " and "))") }
            let handles = state.withLock { state -> Int in
                guard let entry = state.open[id] else { return 0 }
                if entry.handles == 0 {
                    // Only a flatten has it open: stop it, and let later opens find the volume gone.
                    state.cancelledFlattens.insert(id)
                    state.open[id] = nil
                }
                return entry.handles
            }
            guard handles == 0 else { throw StoreError(.busy, "volume \(id) is open (\(handles) handles)") }
            let freed = try spaceReserve.runDeletion { try catalog.write { db -> [Int64] in
                try db.deleteVolumeRow(id: id)
                var freed = try db.releaseReference(to: row.headLayerID)
                if let hidden = row.hiddenSnapshotID, let snapshot = try db.snapshotRow(id: hidden) {
                    try db.deleteSnapshotRow(id: hidden)
                    freed += try db.releaseReference(to: snapshot.layerID)
                }
                return freed
            } }
            removeLayerFiles(freed)
            spaceReserve.refill()
        }
    }

    /// Volumes in creation order. The cursor is opaque; a malformed one is `.invalidArgument`.
    /// A `limit` of zero or less means no limit.
    public func listVolumes(after cursor: String?, limit: Int) throws -> Page<Volume> {
        let after = try Self.parseCursor(cursor)
        let pageSize = limit > 0 ? min(limit, 1 << 30) : 1 << 30
        return try catalog.read { db in
            let rows = try db.volumeRows(afterSeq: after, limit: pageSize + 1)
            let items = try rows.prefix(pageSize).map { try makeVolume($0, db) }
            let next = rows.count > pageSize ? rows[pageSize - 1].seq : nil
            return Page(items: items, nextCursor: next.map(String.init))
        }
    }

    // MARK: Helpers

    func makeVolume(_ row: VolumeRow, _ db: Database) throws -> Volume {
        let head = try db.requireLayer(row.headLayerID)
        var allocated = head.allocatedBytes
        if let open = openVolume(row.id), let live = open.liveHeadAllocation(), live.layerID == head.id {
            allocated = live.bytes
        }
        return Volume(
            id: row.id, name: row.name, size: row.size, clusterSize: row.clusterSize, source: row.source,
            createdAt: Date(timeIntervalSince1970: row.createdAt), chainDepth: head.depth, allocatedBytes: allocated,
            parameters: row.parameters, multiNode: row.multiNode, epoch: row.epoch, movedTo: row.movedTo)
    }

    func checkDepth(_ depth: Int) throws {
        guard depth <= options.hardChainDepthLimit else {
            throw StoreError(.chainDepthLimit, "the chain would be \(depth) layers deep, the limit is \(options.hardChainDepthLimit)")
        }
    }

    func checkCloneShape(size: UInt64, clusterSize: UInt32?, sourceSize: UInt64, sourceClusterSize: UInt32) throws {
        guard size >= sourceSize else {
            throw StoreError(.outOfRange, "a clone of \(sourceSize) bytes cannot be \(size) bytes")
        }
        if let clusterSize, clusterSize != sourceClusterSize {
            throw StoreError(.invalidArgument, "a clone keeps its source's cluster size \(sourceClusterSize)")
        }
        try Self.checkSize(size, clusterSize: sourceClusterSize)
    }

    static func checkSize(_ size: UInt64, clusterSize: UInt32) throws {
        guard (size + UInt64(clusterSize) - 1) / UInt64(clusterSize) <= maximumClusterCount, size < 1 << 62 else {
            throw StoreError(.outOfRange, "\(size) bytes is more than \(maximumClusterCount) clusters of \(clusterSize)")
        }
    }

    static func validateName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 1024, !name.utf8.contains(0) else {
            throw StoreError(.invalidArgument, "a name must be 1–1024 bytes without NUL")
        }
    }

    package static func parseCursor(_ cursor: String?) throws -> Int64 {
        guard let cursor, !cursor.isEmpty else { return 0 }
        guard cursor.utf8.count <= 19, cursor.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let value = Int64(cursor) else {
            throw StoreError(.invalidArgument, "malformed cursor")
        }
        return value
    }
}

/// What a creation request asks of a volume beyond its shape; an idempotent retry must match it.
struct VolumeTraits {
    var parameters: [String: String]
    var multiNode: Bool
}
