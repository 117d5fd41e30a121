import Foundation
import GRDB

/// Snapshots: freezing heads, looking them up, listing and deleting them.
extension BlockStore {
    /// Snapshots a volume, open and being written or not. Crash-consistent: every write that
    /// returned before is in it, none that started after. Idempotent by name; the same name
    /// for another volume is `.alreadyExists`.
    public func createSnapshot(name: String, of volumeID: String) throws -> Snapshot {
        try makeSnapshots([(name: name, volumeID: volumeID)], groupID: nil)[0]
    }

    /// Snapshots several volumes at one point in time, in one transaction. Idempotent when every
    /// name already names a snapshot of the same volume; `.alreadyExists` when only some do.
    public func createSnapshots(_ requests: [(name: String, volumeID: String)], groupID: String) throws -> [Snapshot] {
        try makeSnapshots(requests, groupID: groupID)
    }

    private func makeSnapshots(_ requests: [(name: String, volumeID: String)], groupID: String?) throws -> [Snapshot] {
        guard !requests.isEmpty else { throw StoreError(.invalidArgument, "no snapshot requested") }
        for request in requests { try Self.validateName(request.name) }
        guard Set(requests.map(\.name)).count == requests.count, Set(requests.map(\.volumeID)).count == requests.count else {
            throw StoreError(.invalidArgument, "names and volumes of a snapshot group must be distinct")
        }
        for request in requests where !Identifier.isVolumeID(request.volumeID) {
            throw StoreError.notFound("volume \(request.volumeID)")
        }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            let existing = try catalog.read { db in try requests.map { try db.snapshotRow(named: $0.name) } }
            if existing.contains(where: { $0 != nil }) {
                for (request, row) in zip(requests, existing) {
                    guard let row, row.sourceVolumeID == request.volumeID else {
                        throw StoreError(.alreadyExists, "snapshot \(request.name) exists for another volume or group")
                    }
                }
                return try catalog.read { db in try existing.map { try makeSnapshot($0!, db) } }
            }
            let volumeRows = try catalog.read { db in
                try requests.map { request -> VolumeRow in
                    guard let row = try db.volumeRow(id: request.volumeID) else {
                        throw StoreError.notFound("volume \(request.volumeID)")
                    }
                    try checkDepth(try db.requireLayer(row.headLayerID).depth + 1)
                    return row
                }
            }
            let snapshotIDs = requests.map { _ in Identifier.newSnapshotID() }
            let createdAt = Self.now()
            try freezeHeadsLocked(volumeRows) { db, frozen in
                for (number, request) in requests.enumerated() {
                    try db.insertSnapshot(SnapshotRow(
                        id: snapshotIDs[number], name: request.name, sourceVolumeID: request.volumeID,
                        layerID: frozen[number].id, size: volumeRows[number].size, groupID: groupID, hidden: false,
                        createdAt: createdAt))
                    try db.addReference(to: frozen[number].id)
                }
            }
            for row in volumeRows {
                if let volume = try? catalog.read({ db in try makeVolume(try db.volumeRow(id: row.id)!, db) }) {
                    scheduleFlattenIfDeep(volume)
                }
            }
            return try catalog.read { db in try snapshotIDs.map { try makeSnapshot(try db.snapshotRow(id: $0)!, db) } }
        }
    }

    /// Freezes the heads of `volumes` at one point in time and gives each a fresh head; `record`
    /// runs in the same catalog transaction with the frozen layers. Open volumes are quiesced
    /// (no I/O in flight, head durable) for the duration of the transaction. Call with `controlLock`.
    func freezeHeadsLocked(_ volumes: [VolumeRow], record: (Database, _ frozen: [LayerRow]) throws -> Void) throws {
        let newHeads = volumes.map { _ in allocateLayerID() }
        var openedHeads: [String: LayerFiles] = [:]
        var committed = false
        defer {
            if !committed {
                for files in openedHeads.values { files.close() }
                removeLayerFiles(newHeads)
            }
        }
        // An open volume gets its new head's files now (it writes there next); others when opened.
        for (row, headID) in zip(volumes, newHeads) where openVolume(row.id) != nil {
            try layerDirectory.createLayer(headID, clusterSize: row.clusterSize)
            openedHeads[row.id] = try layerDirectory.openLayer(headID, writable: true)
        }
        let quiesced = volumes.compactMap { row in
            openVolume(row.id).flatMap { volume in openedHeads[row.id].map { (volume, $0) } }
        }.sorted { $0.0.volumeID < $1.0.volumeID }
        let frozenBytes = FrozenBytes()
        try freezeNested(quiesced[...], frozenBytes: frozenBytes) {
            try catalog.write { db in
                var frozen: [LayerRow] = []
                for (row, headID) in zip(volumes, newHeads) {
                    var old = try db.requireLayer(row.headLayerID)
                    if let bytes = frozenBytes.values[row.id] {
                        old.allocatedBytes = bytes
                        try db.setAllocatedBytes(bytes, ofLayer: old.id)
                    }
                    try db.freezeLayer(old.id)
                    try db.insertLayer(LayerRow(
                        id: headID, parentID: old.id, depth: old.depth + 1, clusterSize: row.clusterSize, frozen: false,
                        materialized: openedHeads[row.id] != nil, refCount: 1, allocatedBytes: 0, createdAt: Self.now()))
                    // The volume's reference moves to the new head, which references the old one.
                    try db.setHead(headID, ofVolume: row.id)
                    frozen.append(old)
                }
                try record(db, frozen)
            }
            committed = true
        }
    }

    private final class FrozenBytes: @unchecked Sendable {
        var values: [String: UInt64] = [:]
    }

    private func freezeNested(_ volumes: ArraySlice<(OpenVolume, LayerFiles)>, frozenBytes: FrozenBytes,
                              commit: () throws -> Void) throws {
        guard let (volume, newHead) = volumes.first else { return try commit() }
        try volume.freezeHead(newHead: newHead) { bytes in
            frozenBytes.values[volume.volumeID] = bytes
            try freezeNested(volumes.dropFirst(), frozenBytes: frozenBytes, commit: commit)
        }
    }

    public func snapshot(id: String) throws -> Snapshot {
        guard Identifier.isSnapshotID(id) else { throw StoreError.notFound("snapshot \(id)") }
        return try catalog.read { db in
            guard let row = try db.snapshotRow(id: id), !row.hidden else { throw StoreError.notFound("snapshot \(id)") }
            return try makeSnapshot(row, db)
        }
    }

    public func snapshot(named name: String) throws -> Snapshot? {
        try catalog.read { db in try db.snapshotRow(named: name).map { try makeSnapshot($0, db) } }
    }

    /// Deletes a snapshot: gone from the API at once; its layer's data is freed when the last
    /// clone or later layer that needs it goes.
    public func deleteSnapshot(id: String) throws {
        guard Identifier.isSnapshotID(id) else { throw StoreError.notFound("snapshot \(id)") }
        try controlLock.withLock { _ in
            try throwIfClosed()
            let freed = try spaceReserve.runDeletion { try catalog.write { db -> [Int64] in
                guard let row = try db.snapshotRow(id: id), !row.hidden else { throw StoreError.notFound("snapshot \(id)") }
                try db.deleteSnapshotRow(id: id)
                return try db.releaseReference(to: row.layerID)
            } }
            removeLayerFiles(freed)
            spaceReserve.refill()
        }
    }

    /// Visible snapshots in creation order, optionally of one source volume.
    public func listSnapshots(after cursor: String?, limit: Int, sourceVolumeID: String? = nil) throws -> Page<Snapshot> {
        let after = try Self.parseCursor(cursor)
        let pageSize = limit > 0 ? min(limit, 1 << 30) : 1 << 30
        return try catalog.read { db in
            let rows = try db.visibleSnapshotRows(afterSeq: after, limit: pageSize + 1, sourceVolumeID: sourceVolumeID)
            let items = try rows.prefix(pageSize).map { try makeSnapshot($0, db) }
            let next = rows.count > pageSize ? rows[pageSize - 1].seq : nil
            return Page(items: items, nextCursor: next.map(String.init))
        }
    }

    func makeSnapshot(_ row: SnapshotRow, _ db: Database) throws -> Snapshot {
        let layer = try db.requireLayer(row.layerID)
        return Snapshot(
            id: row.id, name: row.name ?? "", sourceVolumeID: row.sourceVolumeID, size: row.size,
            createdAt: Date(timeIntervalSince1970: row.createdAt), allocatedBytes: layer.allocatedBytes, groupID: row.groupID,
            originNode: row.originNode)
    }
}
