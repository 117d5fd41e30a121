import Foundation
import GRDB

/// The other nodes that stage a multi-node volume and reach it through this store (its owner).
/// Recorded in the catalog, so that a restart of the owner keeps serving them; the driver decides
/// who may stage (at most two nodes at once), the store only remembers who does.
extension BlockStore {
    /// Nodes other than this one staging `volumeID` now, oldest first.
    public func remoteStagers(ofVolume volumeID: String) throws -> [String] {
        try catalog.read { db in
            guard try db.volumeRow(id: volumeID) != nil else { throw StoreError.notFound("volume \(volumeID)") }
            return try db.remoteStagers(ofVolume: volumeID)
        }
    }

    /// Every volume's remote stagers at once, oldest first (volumes no other node stages are
    /// absent), for listings that say where each volume is served.
    public func remoteStagersByVolume() throws -> [String: [String]] {
        try catalog.read { db in try db.remoteStagersByVolume() }
    }

    /// Records `node` as staging `volumeID` (idempotent) and answers the volume; a volume that
    /// is not multi-node is refused (`.busy`: it can be staged on one node only).
    @discardableResult
    public func addRemoteStager(_ node: String, toVolume volumeID: String) throws -> Volume {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        guard !node.isEmpty, node.utf8.count <= 256 else { throw StoreError(.invalidArgument, "a node id must be 1–256 bytes") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.write { db in
                guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
                guard row.multiNode else {
                    throw StoreError(.busy, "volume \(volumeID) is single-node: it is staged only where it lives")
                }
                try db.execute(
                    sql: "INSERT OR IGNORE INTO remote_stagers (volume_id, node_id, since) VALUES (?, ?, ?)",
                    arguments: [volumeID, node, Self.now()])
                return try makeVolume(row, db)
            }
        }
    }

    /// Forgets `node` as a stager of `volumeID`; forgetting one that is not recorded succeeds.
    public func removeRemoteStager(_ node: String, fromVolume volumeID: String) throws {
        try controlLock.withLock { _ in
            try throwIfClosed()
            try catalog.write { db in
                try db.execute(sql: "DELETE FROM remote_stagers WHERE volume_id = ? AND node_id = ?", arguments: [volumeID, node])
            }
        }
    }
}

extension BlockStore {
    /// Freezes a multi-node volume for `node` to take it over: raises its epoch (remote I/O at
    /// the old one is refused from now on) and records where it goes. The caller has snapshotted
    /// the head just before; this store takes no more writes for the volume. Idempotent for the
    /// same node; another node is `.busy`.
    @discardableResult
    public func fenceVolume(id volumeID: String, movedTo node: String) throws -> Volume {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.write { db in
                guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
                if let movedTo = row.movedTo {
                    guard movedTo == node else { throw StoreError(.busy, "volume \(volumeID) is moving to \(movedTo)") }
                    return try makeVolume(row, db)
                }
                guard row.multiNode else { throw StoreError(.busy, "volume \(volumeID) is single-node: it does not move") }
                try db.execute(
                    sql: "UPDATE volumes SET epoch = epoch + 1, moved_to = ? WHERE id = ?", arguments: [node, volumeID])
                return try makeVolume(try db.volumeRow(id: volumeID)!, db)
            }
        }
    }
}

extension BlockStore {
    /// The hidden snapshots of `volumeID` whose names start with `prefix` (those a handover made).
    public func hiddenSnapshots(ofVolume volumeID: String, namedWithPrefix prefix: String) throws -> [Snapshot] {
        try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM snapshots WHERE source_volume_id = ? AND hidden = 1 AND substr(name, 1, ?) = ? ORDER BY seq",
                arguments: [volumeID, prefix.unicodeScalars.count, prefix]
            ).map { try makeSnapshot(try SnapshotRow(row: $0), db) }
        }
    }
}

extension BlockStore {
    /// Drops the hidden replicas of `volumeID` (copies a handover of that volume to this node
    /// fetched) except `keep` and any a volume here stands on; their layers are freed once
    /// nothing reads them. Returns how many went.
    @discardableResult
    public func dropHandOverReplicas(ofVolume volumeID: String, except keep: String? = nil) throws -> Int {
        let candidates = try catalog.read { db in
            try String.fetchAll(
                db, sql: """
                    SELECT s.id FROM snapshots s
                    WHERE s.source_volume_id = ? AND s.hidden = 1 AND s.origin_node IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM volumes v WHERE v.hidden_snapshot_id = s.id)
                    """, arguments: [volumeID])
        }
        var dropped = 0
        for id in candidates where id != keep {
            try dropReplica(snapshotID: id)
            dropped += 1
        }
        return dropped
    }
}

extension Database {
    func remoteStagersByVolume() throws -> [String: [String]] {
        var stagers: [String: [String]] = [:]
        for row in try Row.fetchAll(self, sql: "SELECT volume_id, node_id FROM remote_stagers ORDER BY since, node_id") {
            stagers[row["volume_id"], default: []].append(row["node_id"])
        }
        return stagers
    }

    func remoteStagers(ofVolume volumeID: String) throws -> [String] {
        try String.fetchAll(
            self, sql: "SELECT node_id FROM remote_stagers WHERE volume_id = ? ORDER BY since, node_id", arguments: [volumeID])
    }
}
