import Dispatch
import Foundation
import GRDB
import Synchronization

/// The SQLite catalog (GRDB, WAL, synchronous=FULL): layers, volumes, snapshots.
/// Every change of the store's structure is one transaction here.
///
/// Checkpoints (copying the WAL into the database file, which costs an fsync of that file and
/// tens of milliseconds at worst) never run inside a commit, so a clone or snapshot does not pay
/// for the checkpoint that happened to fall due. A background timer on its own connection
/// copies without blocking commits while they come, and resets the log (so it stops growing)
/// when they pause, or after a very long burst.
final class Catalog: Sendable {
    private let pool: DatabasePool
    private let checkpointer: DatabaseQueue
    private let checkpointTimer: CheckpointTimer
    private let commits = CommitCounter()

    init(path: String) throws {
        var configuration = Configuration()
        configuration.label = "strata.catalog"
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // WAL's default (NORMAL) can lose the last commits on power loss; a catalog change the
            // caller was told succeeded must survive.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
            var checkpointConfiguration = configuration
            checkpointConfiguration.label = "strata.catalog.checkpoint"
            checkpointer = try DatabaseQueue(path: path, configuration: checkpointConfiguration)
        } catch {
            throw Self.storeError(error, "opening the catalog")
        }
        checkpointTimer = CheckpointTimer { [checkpointer, commits] in
            let recent = commits.sinceTick.exchange(0, ordering: .relaxed)
            let sinceCopy = commits.sinceCopy.load(ordering: .relaxed)
            let sinceReset = commits.sinceReset.load(ordering: .relaxed)
            if sinceReset > 0 && (recent == 0 || sinceReset >= Self.forcedResetCommits) {
                // A pause (or a very long burst): copy the rest and let the next commit reuse the
                // log from its start. Blocks commits only for what the passive copies left.
                commits.sinceCopy.subtract(sinceCopy, ordering: .relaxed)
                commits.sinceReset.subtract(sinceReset, ordering: .relaxed)
                _ = try? checkpointer.writeWithoutTransaction { try $0.checkpoint(.restart) }
            } else if sinceCopy > 0 {
                // During a burst: copy what is there without blocking commits.
                commits.sinceCopy.subtract(sinceCopy, ordering: .relaxed)
                _ = try? checkpointer.writeWithoutTransaction { try $0.checkpoint(.passive) }
            }
        }
    }

    /// Commits after which the log is reset even while commits keep coming.
    static let forcedResetCommits = 10_000

    /// Closes the catalog, emptying the log into the database file first.
    func close() {
        checkpointTimer.stop()
        _ = try? pool.writeWithoutTransaction { try $0.checkpoint(.truncate) }
        try? checkpointer.close()
        try? pool.close()
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.read(body)
        } catch {
            throw Self.storeError(error, "reading the catalog")
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            defer { commits.recordCommit() }
            return try pool.write(body)
        } catch {
            throw Self.storeError(error, "writing the catalog")
        }
    }

    private static func storeError(_ error: any Error, _ context: String) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_FULL: return StoreError(.noSpace, context, underlying: error)
            case .SQLITE_BUSY, .SQLITE_LOCKED: return StoreError(.busy, context, underlying: error)
            case .SQLITE_CORRUPT, .SQLITE_NOTADB: return StoreError(.corrupt, context, underlying: error)
            default: break
            }
        }
        return StoreError(.io, context, underlying: error)
    }
}

/// Catalog queries, used inside `Catalog.read` / `Catalog.write` transactions.
extension Database {
    // MARK: Layers

    func layer(_ id: Int64) throws -> LayerRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM layers WHERE id = ?"), arguments: [id]).map(LayerRow.init(row:))
    }

    func requireLayer(_ id: Int64) throws -> LayerRow {
        guard let layer = try layer(id) else { throw StoreError(.corrupt, "layer \(id) is missing from the catalog") }
        return layer
    }

    func allLayers() throws -> [LayerRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM layers ORDER BY id")).map(LayerRow.init(row:))
    }

    /// The highest layer number in use, counting freed layers a lineage still names: a number
    /// is never given twice, or a new layer could pass for a detached head's ancestor.
    func maxLayerID() throws -> Int64 {
        try Int64.fetchOne(try cachedStatement(sql: """
            SELECT MAX(id) FROM (SELECT MAX(id) AS id FROM layers UNION ALL SELECT MAX(ancestor_id) FROM layer_lineage)
            """)) ?? 0
    }

    func insertLayer(_ layer: LayerRow) throws {
        try cachedStatement(
            sql: """
                INSERT INTO layers (id, parent_id, depth, cluster_size, frozen, materialized, ref_count, allocated_bytes, created_at,
                                    uuid, imported)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [layer.id, layer.parentID, layer.depth, Int64(layer.clusterSize), layer.frozen, layer.materialized, layer.refCount,
                        Int64(layer.allocatedBytes), layer.createdAt, layer.uuid, layer.imported])
    }

    func freezeLayer(_ id: Int64) throws {
        try cachedStatement(sql: "UPDATE layers SET frozen = 1 WHERE id = ?").execute(arguments: [id])
    }

    func setMaterialized(_ id: Int64) throws {
        try cachedStatement(sql: "UPDATE layers SET materialized = 1 WHERE id = ?").execute(arguments: [id])
    }

    func setAllocatedBytes(_ bytes: UInt64, ofLayer id: Int64) throws {
        try cachedStatement(sql: "UPDATE layers SET allocated_bytes = ? WHERE id = ?").execute(arguments: [Int64(bytes), id])
    }

    func detachLayerFromParent(_ id: Int64) throws {
        try cachedStatement(sql: "UPDATE layers SET parent_id = NULL, depth = 1 WHERE id = ?").execute(arguments: [id])
    }

    func addReference(to id: Int64) throws {
        try cachedStatement(sql: "UPDATE layers SET ref_count = ref_count + 1 WHERE id = ?").execute(arguments: [id])
    }

    /// Drops one reference; a layer left with none is deleted and drops its parent's reference in
    /// turn. Returns the deleted layers, whose files the caller removes after the commit.
    func releaseReference(to id: Int64) throws -> [Int64] {
        var freed: [Int64] = []
        var next: Int64? = id
        while let current = next {
            let layer = try requireLayer(current)
            guard layer.refCount > 1 else {
                try cachedStatement(sql: "DELETE FROM layers WHERE id = ?").execute(arguments: [current])
                try deleteLineage(of: current)
                freed.append(current)
                next = layer.parentID
                continue
            }
            try cachedStatement(sql: "UPDATE layers SET ref_count = ref_count - 1 WHERE id = ?").execute(arguments: [current])
            next = nil
        }
        return freed
    }

    /// References each layer should have, counted from the rows that point at it.
    func countedReferences() throws -> [Int64: Int] {
        var counts: [Int64: Int] = [:]
        for id in try Int64.fetchAll(try cachedStatement(sql: "SELECT head_layer_id FROM volumes")) { counts[id, default: 0] += 1 }
        for id in try Int64.fetchAll(try cachedStatement(sql: "SELECT layer_id FROM snapshots")) { counts[id, default: 0] += 1 }
        for id in try Int64.fetchAll(try cachedStatement(sql: "SELECT parent_id FROM layers WHERE parent_id IS NOT NULL")) {
            counts[id, default: 0] += 1
        }
        return counts
    }

    /// The chain of a layer, bottom (oldest) first.
    func chain(endingAt id: Int64) throws -> [LayerRow] {
        var chain: [LayerRow] = []
        var next: Int64? = id
        while let current = next {
            let layer = try requireLayer(current)
            chain.append(layer)
            next = layer.parentID
            guard chain.count <= 1 << 16 else { throw StoreError(.corrupt, "layer chain of \(id) loops") }
        }
        return chain.reversed()
    }

    // MARK: Volumes

    func volumeRow(id: String) throws -> VolumeRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM volumes WHERE id = ?"), arguments: [id]).map(VolumeRow.init(row:))
    }

    func volumeRow(named name: String) throws -> VolumeRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM volumes WHERE name = ?"), arguments: [name]).map(VolumeRow.init(row:))
    }

    func volumeRows(afterSeq seq: Int64, limit: Int) throws -> [VolumeRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM volumes WHERE seq > ? ORDER BY seq LIMIT ?"), arguments: [seq, limit])
            .map(VolumeRow.init(row:))
    }

    func allVolumeRows() throws -> [VolumeRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM volumes ORDER BY seq")).map(VolumeRow.init(row:))
    }

    func insertVolume(_ volume: VolumeRow) throws {
        try cachedStatement(
            sql: """
                INSERT INTO volumes (id, name, size, cluster_size, head_layer_id, source_kind, source_id,
                                     hidden_snapshot_id, parameters, multi_node, epoch, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [volume.id, volume.name, Int64(volume.size), Int64(volume.clusterSize), volume.headLayerID,
                        volume.sourceKind, volume.sourceID, volume.hiddenSnapshotID,
                        VolumeRow.encodeParameters(volume.parameters), volume.multiNode ? 1 : 0, Int64(volume.epoch),
                        volume.createdAt])
    }

    func deleteVolumeRow(id: String) throws {
        try cachedStatement(sql: "DELETE FROM volumes WHERE id = ?").execute(arguments: [id])
        try cachedStatement(sql: "DELETE FROM remote_stagers WHERE volume_id = ?").execute(arguments: [id])
    }

    func setHead(_ layerID: Int64, ofVolume id: String) throws {
        try cachedStatement(sql: "UPDATE volumes SET head_layer_id = ? WHERE id = ?").execute(arguments: [layerID, id])
    }

    func setSize(_ size: UInt64, ofVolume id: String) throws {
        try cachedStatement(sql: "UPDATE volumes SET size = ? WHERE id = ?").execute(arguments: [Int64(size), id])
    }

    func clearHiddenSnapshot(ofVolume id: String) throws {
        try cachedStatement(sql: "UPDATE volumes SET hidden_snapshot_id = NULL WHERE id = ?").execute(arguments: [id])
    }

    // MARK: Snapshots

    func snapshotRow(id: String) throws -> SnapshotRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM snapshots WHERE id = ?"), arguments: [id]).map(SnapshotRow.init(row:))
    }

    func snapshotRow(named name: String) throws -> SnapshotRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM snapshots WHERE name = ?"), arguments: [name]).map(SnapshotRow.init(row:))
    }

    func visibleSnapshotRows(afterSeq seq: Int64, limit: Int, sourceVolumeID: String?) throws -> [SnapshotRow] {
        if let sourceVolumeID {
            return try Row.fetchAll(
                try cachedStatement(sql: "SELECT * FROM snapshots WHERE hidden = 0 AND origin_node IS NULL AND seq > ? AND source_volume_id = ? ORDER BY seq LIMIT ?"),
                arguments: [seq, sourceVolumeID, limit]
            ).map(SnapshotRow.init(row:))
        }
        return try Row.fetchAll(
            try cachedStatement(sql: "SELECT * FROM snapshots WHERE hidden = 0 AND origin_node IS NULL AND seq > ? ORDER BY seq LIMIT ?"), arguments: [seq, limit]
        ).map(SnapshotRow.init(row:))
    }

    func allSnapshotRows() throws -> [SnapshotRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM snapshots ORDER BY seq")).map(SnapshotRow.init(row:))
    }

    func insertSnapshot(_ snapshot: SnapshotRow) throws {
        try cachedStatement(
            sql: """
                INSERT INTO snapshots (id, name, source_volume_id, layer_id, size, group_id, hidden, created_at, origin_node)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [snapshot.id, snapshot.name, snapshot.sourceVolumeID, snapshot.layerID, Int64(snapshot.size),
                        snapshot.groupID, snapshot.hidden, snapshot.createdAt, snapshot.originNode])
    }

    func deleteSnapshotRow(id: String) throws {
        try cachedStatement(sql: "DELETE FROM snapshots WHERE id = ?").execute(arguments: [id])
    }
}

private final class CommitCounter: Sendable {
    let sinceTick = Atomic<Int>(0)
    let sinceCopy = Atomic<Int>(0)
    let sinceReset = Atomic<Int>(0)

    func recordCommit() {
        sinceTick.add(1, ordering: .relaxed)
        sinceCopy.add(1, ordering: .relaxed)
        sinceReset.add(1, ordering: .relaxed)
    }
}

/// A repeating background timer (DispatchSource is thread-safe but not marked Sendable).
/// `stop()` returns only once no handler runs and none will start: the catalog closes its
/// connections right after.
private final class CheckpointTimer: @unchecked Sendable {
    private let timer: any DispatchSourceTimer
    private let stopped = StopFlag()

    private final class StopFlag: Sendable {
        let value = Mutex(false)
    }

    init(every interval: DispatchTimeInterval = .milliseconds(100), _ handler: @escaping @Sendable () -> Void) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "strata.catalog.checkpoint", qos: .utility))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [stopped] in
            stopped.value.withLock { stopped in
                if !stopped { handler() }
            }
        }
        timer.resume()
    }

    func stop() {
        stopped.value.withLock { $0 = true }
        timer.cancel()
    }
}

