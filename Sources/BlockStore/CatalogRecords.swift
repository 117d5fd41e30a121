import Foundation
import GRDB

/// A layer row. Invariants (checked by `checkConsistency`):
/// - `refCount` = volumes whose head it is + snapshots pointing at it + layers whose parent it is;
///   a row whose count reaches zero is deleted in the same transaction, its files after commit.
/// - `depth` = 1 + parent's depth (1 without parent); frozen layers never change content.
/// - `materialized`: the layer's files exist. A new layer has none until it is first opened,
///   so creating a volume, clone or snapshot is one catalog commit; a layer without files is empty.
package struct LayerRow: Sendable, Equatable {
    package var id: Int64
    package var parentID: Int64?
    package var depth: Int
    package var clusterSize: UInt32
    package var frozen: Bool
    package var materialized: Bool
    package var refCount: Int
    package var allocatedBytes: UInt64
    package var createdAt: Double
    /// Cluster-wide identity: the same on every node that holds a copy of this frozen layer.
    package var uuid: String
    /// Copied from another node (counted apart in the census).
    package var imported: Bool

    package init(row: Row) throws {
        id = try row.catalogValue("id")
        parentID = try row.catalogValue("parent_id")
        depth = try row.catalogValue("depth")
        clusterSize = try row.catalogUnsigned("cluster_size")
        frozen = try row.catalogValue("frozen")
        materialized = try row.catalogValue("materialized")
        refCount = try row.catalogValue("ref_count")
        allocatedBytes = try row.catalogUnsigned("allocated_bytes")
        createdAt = try row.catalogValue("created_at")
        uuid = try row.catalogValue("uuid")
        imported = try row.catalogValue("imported")
    }

    init(id: Int64, parentID: Int64?, depth: Int, clusterSize: UInt32, frozen: Bool, materialized: Bool = false,
         refCount: Int, allocatedBytes: UInt64, createdAt: Double, uuid: String = Identifier.newLayerUUID(), imported: Bool = false) {
        self.id = id
        self.parentID = parentID
        self.depth = depth
        self.clusterSize = clusterSize
        self.frozen = frozen
        self.materialized = materialized
        self.refCount = refCount
        self.allocatedBytes = allocatedBytes
        self.createdAt = createdAt
        self.uuid = uuid
        self.imported = imported
    }
}

/// A volume row: the name is unique among volumes and is the key of idempotent creation.
package struct VolumeRow: Sendable, Equatable {
    package var seq: Int64
    package var id: String
    package var name: String
    package var size: UInt64
    package var clusterSize: UInt32
    package var headLayerID: Int64
    package var source: VolumeSource?
    /// The hidden snapshot a clone-of-a-volume was made from; released with the clone.
    package var hiddenSnapshotID: String?
    package var parameters: [String: String]
    /// Stageable on several nodes at once (ReadWriteMany Block); see `remote_stagers`.
    package var multiNode: Bool
    /// The ownership epoch: raised each time the volume's writable head changes hands, so that a
    /// node still acting on an older epoch is refused (fencing).
    package var epoch: UInt64
    /// Set once the volume's writable head was frozen for another node to take it over: this
    /// store serves it no more, and frees it once that node holds it.
    package var movedTo: String?
    package var createdAt: Double

    package init(row: Row) throws {
        seq = try row.catalogValue("seq")
        id = try row.catalogValue("id")
        name = try row.catalogValue("name")
        size = try row.catalogUnsigned("size")
        clusterSize = try row.catalogUnsigned("cluster_size")
        headLayerID = try row.catalogValue("head_layer_id")
        switch (try row.catalogValue("source_kind") as String?, try row.catalogValue("source_id") as String?) {
        case ("snapshot", let id?): source = .snapshot(id: id)
        case ("volume", let id?): source = .volume(id: id)
        default: source = nil
        }
        hiddenSnapshotID = try row.catalogValue("hidden_snapshot_id")
        parameters = Self.decodeParameters(try row.catalogValue("parameters"))
        multiNode = (try row.catalogValue("multi_node") as Int64) != 0
        epoch = try row.catalogUnsigned("epoch")
        movedTo = try row.catalogValue("moved_to")
        createdAt = try row.catalogValue("created_at")
    }

    init(id: String, name: String, size: UInt64, clusterSize: UInt32, headLayerID: Int64, source: VolumeSource?,
         hiddenSnapshotID: String?, parameters: [String: String], multiNode: Bool = false, epoch: UInt64 = 1, createdAt: Double) {
        self.seq = 0
        self.id = id
        self.name = name
        self.size = size
        self.clusterSize = clusterSize
        self.headLayerID = headLayerID
        self.source = source
        self.hiddenSnapshotID = hiddenSnapshotID
        self.parameters = parameters
        self.multiNode = multiNode
        self.epoch = epoch
        self.movedTo = nil
        self.createdAt = createdAt
    }

    var sourceKind: String? {
        switch source {
        case .snapshot: "snapshot"
        case .volume: "volume"
        case nil: nil
        }
    }

    var sourceID: String? {
        switch source {
        case .snapshot(let id), .volume(let id): id
        case nil: nil
        }
    }

    package static func encodeParameters(_ parameters: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(parameters)) ?? Data("{}".utf8), as: UTF8.self)
    }

    package static func decodeParameters(_ text: String) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))) ?? [:]
    }
}

/// A snapshot row. Hidden snapshots (made for clone-from-volume) have no name and are never listed.
package struct SnapshotRow: Sendable, Equatable {
    package var seq: Int64
    package var id: String
    package var name: String?
    package var sourceVolumeID: String
    package var layerID: Int64
    package var size: UInt64
    package var groupID: String?
    package var hidden: Bool
    package var createdAt: Double
    /// The node this replica was copied from; nil for a snapshot taken here.
    package var originNode: String?

    package init(row: Row) throws {
        seq = try row.catalogValue("seq")
        id = try row.catalogValue("id")
        name = try row.catalogValue("name")
        sourceVolumeID = try row.catalogValue("source_volume_id")
        layerID = try row.catalogValue("layer_id")
        size = try row.catalogUnsigned("size")
        groupID = try row.catalogValue("group_id")
        hidden = try row.catalogValue("hidden")
        createdAt = try row.catalogValue("created_at")
        originNode = try row.catalogValue("origin_node")
    }

    init(id: String, name: String?, sourceVolumeID: String, layerID: Int64, size: UInt64, groupID: String?, hidden: Bool, createdAt: Double,
         originNode: String? = nil) {
        self.seq = 0
        self.id = id
        self.name = name
        self.sourceVolumeID = sourceVolumeID
        self.layerID = layerID
        self.size = size
        self.groupID = groupID
        self.hidden = hidden
        self.createdAt = createdAt
        self.originNode = originNode
    }
}

/// Reading catalog columns. SQLite keeps no checksums: a flipped bit in a record can leave NULL,
/// text or an out-of-range number where the schema promises something else. That is `.corrupt`,
/// never a trap (GRDB's subscript traps) and never a silently wrapped value.
extension Row {
    func catalogValue<Value: DatabaseValueConvertible>(_ name: String) throws -> Value {
        do {
            return try decode(Value.self, forColumn: name)
        } catch {
            throw StoreError(.corrupt, "catalog column \(name) does not hold a \(Value.self)", underlying: error)
        }
    }

    func catalogUnsigned<Value: FixedWidthInteger & UnsignedInteger>(_ name: String) throws -> Value {
        let number: Int64 = try catalogValue(name)
        guard let value = Value(exactly: number) else {
            throw StoreError(.corrupt, "catalog column \(name) holds \(number), out of range for a \(Value.self)")
        }
        return value
    }
}
