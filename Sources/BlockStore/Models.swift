import Foundation

/// Where a new volume's initial contents come from.
public enum VolumeSource: Sendable, Hashable {
    case snapshot(id: String)
    case volume(id: String)
}

/// A writable volume as the catalog describes it.
public struct Volume: Sendable, Hashable {
    public var id: String
    public var name: String
    public var size: UInt64
    public var clusterSize: UInt32
    public var source: VolumeSource?
    public var createdAt: Date
    /// Number of layers a read may walk through: 1 for a volume with no parent.
    public var chainDepth: Int
    /// Bytes held by the volume's own writable layer (frozen layers are counted on snapshots).
    public var allocatedBytes: UInt64
    public var parameters: [String: String]
    /// Stageable on several nodes at once (ReadWriteMany Block); its writable head stays here.
    public var multiNode: Bool = false
    /// The ownership epoch (see `VolumeRow.epoch`).
    public var epoch: UInt64 = 1
    /// The node this volume is being handed to (its head here is frozen); nil while it lives here.
    public var movedTo: String? = nil
}

/// A frozen point-in-time copy of a volume.
public struct Snapshot: Sendable, Hashable {
    public var id: String
    public var name: String
    public var sourceVolumeID: String
    public var size: UInt64
    public var createdAt: Date
    /// Bytes held by the frozen layer this snapshot points at.
    public var allocatedBytes: UInt64
    public var groupID: String?
    /// The node this snapshot was copied from (a replica); nil when it was taken here.
    public var originNode: String? = nil
}

/// One page of a listing; pass `nextCursor` back to get the next page, `nil` means the end.
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    public var nextCursor: String?

    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

/// Space of the pool: the filesystem of the state directory and what the store has promised and used.
public struct PoolCapacity: Sendable {
    public var totalBytes: UInt64
    public var freeBytes: UInt64
    /// Sum of allocated bytes over every layer (volumes, snapshots, hidden layers).
    public var allocatedBytes: UInt64
    /// Sum of the sizes of all volumes.
    public var provisionedBytes: UInt64
}

/// What the store holds (`census()`).
public struct StoreCensus: Sendable, Equatable {
    public var volumes: Int
    /// Snapshots a caller can see; the hidden ones behind clones of volumes are counted apart.
    public var snapshots: Int
    public var hiddenSnapshots: Int
    /// Every layer, including those of deleted snapshots that clones still read.
    public var layers: Int
    /// Sum of allocated bytes over every layer.
    public var allocatedBytes: UInt64
    /// Sum of the sizes of all volumes.
    public var provisionedBytes: UInt64
    /// The longest chain of any volume (1: a volume with no snapshot).
    public var deepestChain: Int
    /// Snapshots copied from other nodes (replicas), hidden ones included.
    public var replicaSnapshots: Int = 0
    /// Layers copied from other nodes, and the bytes they hold (part of `layers` and `allocatedBytes`).
    public var importedLayers: Int = 0
    public var importedBytes: UInt64 = 0
    /// ReadWriteMany volumes (stageable on several nodes); of those, how many another node
    /// stages now (served from here over the peer connection), and how many are frozen here
    /// while another node takes them over (`Volume.movedTo`).
    public var multiNodeVolumes: Int = 0
    public var remotelyStagedVolumes: Int = 0
    public var movingVolumes: Int = 0
}

/// What `checkConsistency()` found; empty lists mean the catalog and the files agree.
public struct ConsistencyReport: Sendable, CustomStringConvertible {
    public struct ReferenceMismatch: Sendable, Hashable {
        public var layerID: Int64
        public var recorded: Int
        public var expected: Int
    }

    /// Layer files with no catalog row.
    public var orphanFiles: [String] = []
    /// Layers the catalog lists whose data or map file is missing.
    public var missingLayerFiles: [Int64] = []
    /// Layers nothing references, or whose parent row is gone.
    public var danglingLayers: [Int64] = []
    /// Volumes or snapshots pointing at a layer that does not exist.
    public var brokenReferences: [String] = []
    public var referenceMismatches: [ReferenceMismatch] = []
    /// Maps whose header or entries do not parse.
    public var corruptMaps: [Int64] = []
    /// Maps left dirty by a crash (cleared by the reconcile at open).
    public var dirtyMaps: [Int64] = []

    public var isClean: Bool {
        orphanFiles.isEmpty && missingLayerFiles.isEmpty && danglingLayers.isEmpty && brokenReferences.isEmpty
            && referenceMismatches.isEmpty && corruptMaps.isEmpty && dirtyMaps.isEmpty
    }

    public var description: String {
        if isClean { return "consistent" }
        var parts: [String] = []
        if !orphanFiles.isEmpty { parts.append("orphan files \(orphanFiles)") }
        if !missingLayerFiles.isEmpty { parts.append("missing layer files \(missingLayerFiles)") }
        if !danglingLayers.isEmpty { parts.append("dangling layers \(danglingLayers)") }
        if !brokenReferences.isEmpty { parts.append("broken references \(brokenReferences)") }
        if !referenceMismatches.isEmpty {
            let text = referenceMismatches.map { "layer \($0.layerID): \($0.recorded) recorded, \($0.expected) expected" }
            parts.append("reference mismatches [\(text.joined(separator: ", "))]")
        }
        if !corruptMaps.isEmpty { parts.append("corrupt maps \(corruptMaps)") }
        if !dirtyMaps.isEmpty { parts.append("dirty maps \(dirtyMaps)") }
        return parts.joined(separator: "; ")
    }
}
