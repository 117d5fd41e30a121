import GRDB

/// What another node needs to hold a copy of a snapshot: its shape and the identities of the
/// frozen layers of its chain, bottom (oldest) first.
public struct ReplicaManifest: Sendable, Equatable {
    public var snapshotID: String
    public var sourceVolumeID: String
    public var size: UInt64
    public var clusterSize: UInt32
    /// A hidden snapshot (made for a clone of a volume); never listed on either node.
    public var hidden: Bool
    /// The node the snapshot was taken on; nil in a manifest of this store's own snapshot.
    public var originNode: String?
    public var layers: [LayerDescriptor]

    public init(snapshotID: String, sourceVolumeID: String, size: UInt64, clusterSize: UInt32, hidden: Bool,
                originNode: String?, layers: [LayerDescriptor]) {
        self.snapshotID = snapshotID
        self.sourceVolumeID = sourceVolumeID
        self.size = size
        self.clusterSize = clusterSize
        self.hidden = hidden
        self.originNode = originNode
        self.layers = layers
    }

    /// Bytes held by the whole chain (what a node holding none of it has to fetch).
    public var allocatedBytes: UInt64 { layers.reduce(0) { $0 + $1.allocatedBytes } }
}

/// One frozen layer of a chain, by its cluster-wide identity.
public struct LayerDescriptor: Sendable, Equatable {
    public var uuid: String
    public var allocatedBytes: UInt64

    public init(uuid: String, allocatedBytes: UInt64) {
        self.uuid = uuid
        self.allocatedBytes = allocatedBytes
    }

    /// 32 lowercase hex digits; anything else names no layer.
    public static func isValidUUID(_ uuid: String) -> Bool { Identifier.isLayerUUID(uuid) }
}

/// A run of a layer's address space that the layer holds: bytes (`isZero == false`, from its data
/// file) or a discarded range that reads as zeros and hides its parents. Holes travel as nothing.
public struct LayerExtent: Sendable, Hashable {
    public var offset: UInt64
    public var length: UInt64
    public var isZero: Bool

    public init(offset: UInt64, length: UInt64, isZero: Bool) {
        self.offset = offset
        self.length = length
        self.isZero = isZero
    }
}

/// Read access to one frozen layer for sending it to another node. Frozen layers never change,
/// and the open descriptors keep the files readable even if the layer is freed meanwhile.
public final class LayerExport: Sendable {
    public let descriptor: LayerDescriptor
    public let clusterSize: UInt32
    private let files: LayerFiles

    init(descriptor: LayerDescriptor, clusterSize: UInt32, files: LayerFiles) {
        self.descriptor = descriptor
        self.clusterSize = clusterSize
        self.files = files
    }

    deinit { files.close() }

    /// The layer's allocated extents in offset order: whole clusters and 4 KiB subclusters that
    /// hold data, adjacent ones joined up to `maximumLength` bytes, and zeroed clusters.
    public func extents(maximumLength: UInt64 = 1 << 20) throws -> [LayerExtent] {
        let clusterSize = UInt64(self.clusterSize)
        let subclusters = Subclusters(clusterSize: Int(clusterSize))
        var extents: [LayerExtent] = []
        func append(_ offset: UInt64, _ length: UInt64, zero: Bool) {
            if var last = extents.last, last.isZero == zero, last.offset + last.length == offset,
                zero || last.length + length <= maximumLength {
                last.length += length
                extents[extents.count - 1] = last
            } else {
                extents.append(LayerExtent(offset: offset, length: length, isZero: zero))
            }
        }
        var entries: [(Int, MapEntry)] = []
        try files.map.forEachEntry { cluster, entry in entries.append((cluster, entry)) }
        for (cluster, entry) in entries.sorted(by: { $0.0 < $1.0 }) {
            let start = UInt64(cluster) * clusterSize
            switch entry.state {
            case .unallocated: continue
            case .zero: append(start, clusterSize, zero: true)
            case .data: append(start, clusterSize, zero: false)
            case .partial:
                for subcluster in 0..<subclusters.count where entry.subclusterMask & (1 << subcluster) != 0 {
                    append(start + UInt64(subcluster << subclusters.shift), UInt64(subclusters.size), zero: false)
                }
            }
        }
        return extents
    }

    /// Reads the bytes of a data extent (`buffer.count` bytes from `offset`).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try files.data.read(into: buffer, at: offset)
    }
}

extension BlockStore {
    /// The manifest of a snapshot held here (taken here, hidden, or a complete replica);
    /// `.notFound` for anything else.
    public func replicaManifest(snapshotID: String) throws -> ReplicaManifest {
        guard Identifier.isSnapshotID(snapshotID) else { throw StoreError.notFound("snapshot \(snapshotID)") }
        return try catalog.read { db in
            guard let row = try db.snapshotRow(id: snapshotID) else { throw StoreError.notFound("snapshot \(snapshotID)") }
            let chain = try db.chain(endingAt: row.layerID)
            return ReplicaManifest(
                snapshotID: row.id, sourceVolumeID: row.sourceVolumeID, size: row.size, clusterSize: chain.last!.clusterSize,
                hidden: row.hidden, originNode: row.originNode,
                layers: chain.map { LayerDescriptor(uuid: $0.uuid, allocatedBytes: $0.allocatedBytes) })
        }
    }

    /// Opens one frozen layer of a snapshot's chain for reading. A layer that is not in the chain
    /// of that snapshot is `.notFound`, whatever else holds it: a writable head never is.
    public func exportLayer(snapshotID: String, layerUUID: String) throws -> LayerExport {
        guard Identifier.isSnapshotID(snapshotID) else { throw StoreError.notFound("snapshot \(snapshotID)") }
        guard Identifier.isLayerUUID(layerUUID) else { throw StoreError.notFound("layer \(layerUUID)") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            let layer = try catalog.read { db -> LayerRow in
                guard let row = try db.snapshotRow(id: snapshotID) else { throw StoreError.notFound("snapshot \(snapshotID)") }
                guard let layer = try db.chain(endingAt: row.layerID).first(where: { $0.uuid == layerUUID }), layer.frozen else {
                    throw StoreError.notFound("layer \(layerUUID) of snapshot \(snapshotID)")
                }
                return layer
            }
            let descriptor = LayerDescriptor(uuid: layer.uuid, allocatedBytes: layer.allocatedBytes)
            // A layer never written has no files yet: they are made now, as a first open would.
            if !layer.materialized { try materializeLayerLocked(layer) }
            return LayerExport(descriptor: descriptor, clusterSize: layer.clusterSize,
                               files: try layerDirectory.openLayer(layer.id, writable: false))
        }
    }
}
