import Foundation
import GRDB

/// Every layer with what points at it, read in one catalog transaction (for admin views).
public struct StoreTopology: Sendable {
    public struct Layer: Sendable, Hashable {
        public var id: Int64
        /// Nil at the bottom of a chain (a first layer, or a head a flatten detached).
        public var parentID: Int64?
        public var depth: Int
        public var frozen: Bool
        public var allocatedBytes: UInt64
        /// Copied from another node (a replica's layer), not written here.
        public var imported: Bool = false
    }

    /// A volume and its writable head.
    public struct Head: Sendable {
        public var volume: Volume
        public var layerID: Int64
    }

    /// A snapshot and its frozen layer; hidden ones stand behind clones of volumes.
    public struct Point: Sendable {
        public var snapshot: Snapshot
        public var layerID: Int64
        public var hidden: Bool
    }

    public var layers: [Layer]
    public var heads: [Head]
    public var points: [Point]
    /// Volumes whose background flatten is queued or running.
    public var flattening: [String]
    /// Other nodes staging each multi-node volume (see `remoteStagers(ofVolume:)`); volumes no
    /// other node stages are absent.
    public var remoteStagers: [String: [String]] = [:]
}

extension BlockStore {
    /// The layer forest as the catalog has committed it; takes no lock the I/O path uses.
    public func topology() throws -> StoreTopology {
        let flattening = state.withLock { $0.scheduledFlattens.sorted() }
        return try catalog.read { db in
            let layers = try db.allLayers().map {
                StoreTopology.Layer(id: $0.id, parentID: $0.parentID, depth: $0.depth, frozen: $0.frozen, allocatedBytes: $0.allocatedBytes,
                                    imported: $0.imported)
            }
            let heads = try db.allVolumeRows().map { StoreTopology.Head(volume: try makeVolume($0, db), layerID: $0.headLayerID) }
            let points = try db.allSnapshotRows().map {
                StoreTopology.Point(snapshot: try makeSnapshot($0, db), layerID: $0.layerID, hidden: $0.hidden)
            }
            return StoreTopology(
                layers: layers, heads: heads, points: points, flattening: flattening, remoteStagers: try db.remoteStagersByVolume())
        }
    }

    /// Bytes kept in `space-reserve`.
    public var reserveBytes: UInt64 { UInt64(options.spaceReserveBytes) }
}
