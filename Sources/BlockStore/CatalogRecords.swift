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

    package init(row: Row) {
        id = row["id"]
        parentID = row["parent_id"]
        depth = row["depth"]
        clusterSize = UInt32(row["cluster_size"] as Int64)
        frozen = row["frozen"]
        materialized = row["materialized"]
        refCount = row["ref_count"]
        allocatedBytes = UInt64(row["allocated_bytes"] as Int64)
        createdAt = row["created_at"]
    }

    init(id: Int64, parentID: Int64?, depth: Int, clusterSize: UInt32, frozen: Bool, materialized: Bool = false,
         refCount: Int, allocatedBytes: UInt64, createdAt: Double) {
        self.id = id
        self.parentID = parentID
        self.depth = depth
        self.clusterSize = clusterSize
        self.frozen = frozen
        self.materialized = materialized
        self.refCount = refCount
        self.allocatedBytes = allocatedBytes
        self.createdAt = createdAt
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
    package var createdAt: Double

    package init(row: Row) {
        seq = row["seq"]
        id = row["id"]
        name = row["name"]
        size = UInt64(row["size"] as Int64)
        clusterSize = UInt32(row["cluster_size"] as Int64)
        headLayerID = row["head_layer_id"]
        switch (row["source_kind"] as String?, row["source_id"] as String?) {
        case ("snapshot", let id?): source = .snapshot(id: id)
        case ("volume", let id?): source = .volume(id: id)
        default: source = nil
        }
        hiddenSnapshotID = row["hidden_snapshot_id"]
        parameters = Self.decodeParameters(row["parameters"])
        createdAt = row["created_at"]
    }

    init(id: String, name: String, size: UInt64, clusterSize: UInt32, headLayerID: Int64, source: VolumeSource?,
         hiddenSnapshotID: String?, parameters: [String: String], createdAt: Double) {
        self.seq = 0
        self.id = id
        self.name = name
        self.size = size
        self.clusterSize = clusterSize
        self.headLayerID = headLayerID
        self.source = source
        self.hiddenSnapshotID = hiddenSnapshotID
        self.parameters = parameters
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

    package init(row: Row) {
        seq = row["seq"]
        id = row["id"]
        name = row["name"]
        sourceVolumeID = row["source_volume_id"]
        layerID = row["layer_id"]
        size = UInt64(row["size"] as Int64)
        groupID = row["group_id"]
        hidden = row["hidden"]
        createdAt = row["created_at"]
    }

    init(id: String, name: String?, sourceVolumeID: String, layerID: Int64, size: UInt64, groupID: String?, hidden: Bool, createdAt: Double) {
        self.seq = 0
        self.id = id
        self.name = name
        self.sourceVolumeID = sourceVolumeID
        self.layerID = layerID
        self.size = size
        self.groupID = groupID
        self.hidden = hidden
        self.createdAt = createdAt
    }
}
