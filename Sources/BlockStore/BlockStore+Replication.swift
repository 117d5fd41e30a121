import Foundation
import GRDB

/// A snapshot this store holds as a copy of another node's.
public struct ReplicaRecord: Sendable, Equatable {
    public var snapshotID: String
    public var originNode: String
    public var hidden: Bool
}

/// Replicas: snapshots of other nodes copied here layer by layer (see `ReplicaImport`), the
/// clones made from them, and the hidden snapshots a peer's clone of a volume is fetched from.
extension BlockStore {
    /// Plans the copy of a snapshot described by another node. Returns nil when the snapshot is
    /// here already (taken here or copied before). Layers whose identity is here already are not
    /// fetched again: only the top of the chain above the highest one present is.
    public func beginReplicaImport(_ manifest: ReplicaManifest, originNode: String) throws -> ReplicaImport? {
        guard Identifier.isSnapshotID(manifest.snapshotID), Identifier.isVolumeID(manifest.sourceVolumeID) else {
            throw StoreError(.invalidArgument, "the manifest names no valid snapshot and volume")
        }
        guard !originNode.isEmpty, originNode.utf8.count <= 256 else { throw StoreError(.invalidArgument, "invalid origin node") }
        guard !manifest.layers.isEmpty, manifest.layers.allSatisfy({ Identifier.isLayerUUID($0.uuid) }),
            Set(manifest.layers.map(\.uuid)).count == manifest.layers.count
        else { throw StoreError(.invalidArgument, "the manifest of \(manifest.snapshotID) lists invalid layers") }
        guard Self.isValidClusterSize(manifest.clusterSize), manifest.size > 0 else {
            throw StoreError(.invalidArgument, "the manifest of \(manifest.snapshotID) has an invalid shape")
        }
        try Self.checkSize(manifest.size, clusterSize: manifest.clusterSize)
        try checkDepth(manifest.layers.count + 1)
        return try catalog.read { db -> ReplicaImport? in
            if try db.snapshotRow(id: manifest.snapshotID) != nil { return nil }
            var presentCount = 0
            for (index, descriptor) in manifest.layers.enumerated().reversed() {
                guard let local = try db.layer(uuid: descriptor.uuid) else { continue }
                // A frozen layer never changes its parent, so a layer here brings its whole chain.
                let chain = try db.chain(endingAt: local.id)
                guard chain.map(\.uuid) == manifest.layers[...index].map(\.uuid), local.frozen,
                    local.clusterSize == manifest.clusterSize
                else {
                    throw StoreError(.invalidArgument, "layer \(descriptor.uuid) is here with another chain or shape")
                }
                presentCount = index + 1
                break
            }
            return ReplicaImport(
                store: self, manifest: manifest, originNode: originNode, missingLayers: Array(manifest.layers[presentCount...]),
                presentTopUUID: presentCount > 0 ? manifest.layers[presentCount - 1].uuid : nil)
        }
    }

    /// The catalog step of `ReplicaImport.commit()`: the copied layers (frozen, referenced by the
    /// layer above and the top one by the snapshot) and the replica snapshot row, in one transaction.
    func commitReplica(_ replica: ReplicaImport, layers: [(LayerDescriptor, localID: Int64, allocatedBytes: UInt64)]) throws -> Snapshot {
        let manifest = replica.manifest
        return try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.write { db in
                if let existing = try db.snapshotRow(id: manifest.snapshotID) {
                    throw StoreError(.alreadyExists, "snapshot \(existing.id) arrived meanwhile")
                }
                var parent: LayerRow?
                if let uuid = replica.presentTopUUID {
                    guard let row = try db.layer(uuid: uuid) else {
                        throw StoreError(.busy, "layer \(uuid) of \(manifest.snapshotID) was freed during the copy; fetch again")
                    }
                    parent = row
                }
                let createdAt = Self.now()
                for (index, (descriptor, localID, bytes)) in layers.enumerated() {
                    let row = LayerRow(
                        id: localID, parentID: parent?.id, depth: (parent?.depth ?? 0) + 1, clusterSize: manifest.clusterSize,
                        frozen: true, materialized: true, refCount: 1, allocatedBytes: bytes, createdAt: createdAt,
                        uuid: descriptor.uuid, imported: true)
                    try db.insertLayer(row)
                    // The first copied layer references the shared one below; each later one its own parent.
                    if index == 0, let parent { try db.addReference(to: parent.id) }
                    parent = row
                }
                guard let top = parent else { throw StoreError(.corrupt, "replica \(manifest.snapshotID) has no layer") }
                // Rows just inserted start with the reference of the layer above (or of the snapshot).
                if layers.isEmpty { try db.addReference(to: top.id) }
                let row = SnapshotRow(
                    id: manifest.snapshotID, name: nil, sourceVolumeID: manifest.sourceVolumeID, layerID: top.id,
                    size: manifest.size, groupID: nil, hidden: manifest.hidden, createdAt: createdAt, originNode: replica.originNode)
                try db.insertSnapshot(row)
                return try makeSnapshot(row, db)
            }
        }
    }

    /// Every replica held here.
    public func replicas() throws -> [ReplicaRecord] {
        try catalog.read { db in
            try db.replicaSnapshotRows().map { ReplicaRecord(snapshotID: $0.id, originNode: $0.originNode ?? "", hidden: $0.hidden) }
        }
    }

    /// Drops a replica (its origin deleted the snapshot). Its layers are freed once no clone here
    /// reads them. A snapshot taken here is not a replica: `.notFound`.
    public func dropReplica(snapshotID: String) throws {
        guard Identifier.isSnapshotID(snapshotID) else { throw StoreError.notFound("replica \(snapshotID)") }
        try controlLock.withLock { _ in
            try throwIfClosed()
            let freed = try spaceReserve.runDeletion { try catalog.write { db -> [Int64] in
                guard let row = try db.snapshotRow(id: snapshotID), row.originNode != nil else {
                    throw StoreError.notFound("replica \(snapshotID)")
                }
                try db.deleteSnapshotRow(id: snapshotID)
                for volume in try db.volumeRows(hiddenSnapshotID: snapshotID) { try db.clearHiddenSnapshot(ofVolume: volume.id) }
                return try db.releaseReference(to: row.layerID)
            } }
            removeLayerFiles(freed)
            spaceReserve.refill()
        }
    }

    /// A clone of a replica of another node's hidden snapshot, recorded with the source the
    /// caller asked for (a volume of that node). The clone holds the replica as its hidden
    /// snapshot and releases it when deleted, as a local clone of a volume does. Idempotent by name.
    /// With `adopting`, the clone is that volume of another node taking up residence here (an
    /// ownership handover): it keeps the volume's id and next epoch, and a retry finds it by id.
    public func createVolumeFromReplica(
        name: String, size: UInt64, replicaID: String, recordedSource: VolumeSource?, parameters: [String: String] = [:],
        multiNode: Bool = false, adopting adopted: AdoptedVolume? = nil
    ) throws -> Volume {
        let traits = VolumeTraits(parameters: parameters, multiNode: multiNode)
        try Self.validateName(name)
        guard Identifier.isSnapshotID(replicaID) else { throw StoreError.notFound("replica \(replicaID)") }
        let volume = try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.write { db in
                // Taken over already (a retry after a crash): the volume is here under its own id.
                if let adopted, let existing = try db.volumeRow(id: adopted.volumeID) { return try makeVolume(existing, db) }
                if let existing = try db.volumeRow(named: name) {
                    return try matchExisting(existing, size: size, clusterSize: nil, source: recordedSource, traits: traits, db)
                }
                guard let replica = try db.snapshotRow(id: replicaID), replica.originNode != nil else {
                    throw StoreError.notFound("replica \(replicaID)")
                }
                let layer = try db.requireLayer(replica.layerID)
                try checkCloneShape(size: size, clusterSize: nil, sourceSize: replica.size, sourceClusterSize: layer.clusterSize)
                try checkDepth(layer.depth + 1)
                let headID = allocateLayerID()
                let volumeID = adopted?.volumeID ?? Identifier.newVolumeID()
                let createdAt = Self.now()
                try db.addReference(to: layer.id)
                try db.insertLayer(LayerRow(
                    id: headID, parentID: layer.id, depth: layer.depth + 1, clusterSize: layer.clusterSize, frozen: false,
                    refCount: 1, allocatedBytes: 0, createdAt: createdAt))
                try db.insertVolume(VolumeRow(
                    id: volumeID, name: name, size: size, clusterSize: layer.clusterSize, headLayerID: headID,
                    source: recordedSource, hiddenSnapshotID: replica.hidden ? replicaID : nil, parameters: parameters,
                    multiNode: multiNode, epoch: adopted?.epoch ?? 1, createdAt: createdAt))
                return try makeVolume(try db.volumeRow(id: volumeID)!, db)
            }
        }
        // Each ownership handover adds the layers it copied to the volume's chain: past the soft
        // limit the chain is flattened like any other, or a volume that keeps following its VM
        // would reach the hard limit and could not move again.
        scheduleFlattenIfDeep(volume)
        return volume
    }

    /// A hidden snapshot of a volume for another node to clone it from, idempotent by `name` (the
    /// peer derives it from its request, so a retried request reuses it). `releasePeerSnapshot`
    /// deletes it once the peer holds its copy.
    public func createPeerSnapshot(name: String, of volumeID: String) throws -> Snapshot {
        try Self.validateName(name)
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            if let existing = try catalog.read({ try $0.snapshotRow(named: name) }) {
                guard existing.hidden, existing.sourceVolumeID == volumeID else {
                    throw StoreError(.alreadyExists, "snapshot \(name) exists for another volume")
                }
                return try catalog.read { try makeSnapshot(existing, $0) }
            }
            guard let row = try catalog.read({ try $0.volumeRow(id: volumeID) }) else { throw StoreError.notFound("volume \(volumeID)") }
            try checkDepth(try catalog.read { try $0.requireLayer(row.headLayerID).depth } + 1)
            let snapshotID = Identifier.newSnapshotID()
            try freezeHeadsLocked([row]) { db, frozen in
                try db.insertSnapshot(SnapshotRow(
                    id: snapshotID, name: name, sourceVolumeID: volumeID, layerID: frozen[0].id, size: row.size, groupID: nil,
                    hidden: true, createdAt: Self.now()))
                try db.addReference(to: frozen[0].id)
            }
            return try catalog.read { try makeSnapshot(try $0.snapshotRow(id: snapshotID)!, $0) }
        }
    }

    /// Deletes a hidden snapshot made by `createPeerSnapshot`; one already gone is fine.
    public func releasePeerSnapshot(id: String) throws {
        guard Identifier.isSnapshotID(id) else { throw StoreError.notFound("snapshot \(id)") }
        try controlLock.withLock { _ in
            try throwIfClosed()
            let freed = try spaceReserve.runDeletion { try catalog.write { db -> [Int64] in
                guard let row = try db.snapshotRow(id: id) else { return [] }
                guard row.hidden, row.name != nil, row.originNode == nil else {
                    throw StoreError(.invalidArgument, "snapshot \(id) was not made for a peer")
                }
                try db.deleteSnapshotRow(id: id)
                return try db.releaseReference(to: row.layerID)
            } }
            removeLayerFiles(freed)
        }
    }
}

extension Database {
    func layer(uuid: String) throws -> LayerRow? {
        try Row.fetchOne(try cachedStatement(sql: "SELECT * FROM layers WHERE uuid = ?"), arguments: [uuid]).map(LayerRow.init(row:))
    }

    func replicaSnapshotRows() throws -> [SnapshotRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM snapshots WHERE origin_node IS NOT NULL ORDER BY seq"))
            .map(SnapshotRow.init(row:))
    }

    func volumeRows(hiddenSnapshotID: String) throws -> [VolumeRow] {
        try Row.fetchAll(try cachedStatement(sql: "SELECT * FROM volumes WHERE hidden_snapshot_id = ?"), arguments: [hiddenSnapshotID])
            .map(VolumeRow.init(row:))
    }
}

/// A volume another node hands over: the id it keeps and the epoch it continues at.
public struct AdoptedVolume: Sendable {
    public var volumeID: String
    public var epoch: UInt64

    public init(volumeID: String, epoch: UInt64) {
        self.volumeID = volumeID
        self.epoch = epoch
    }
}
