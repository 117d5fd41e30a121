import GRDB

/// The catalog side of a collapse (`collapsePrivateLayers`): which layers of a volume's chain
/// only that volume reads, and the commit that puts its head on the layer below them.
extension BlockStore {
    /// The layer a collapse keeps under the head, and its chain position.
    struct KeptBase: Equatable {
        var position: Int
        var layerID: Int64
    }

    enum CollapsePlan: Equatable {
        /// The head's parent is read by something else (or there is none).
        case nothing
        /// Every layer below the head is the volume's own.
        case whole
        case keeping(KeptBase)
    }

    /// Walks down from the head's parent while each layer is referenced only by the layer above
    /// it (and by the volume's own hidden snapshot, which goes with them): no snapshot, no other
    /// clone and no other head reads it, so dropping it changes nothing anybody else sees, and
    /// changed-block listings (which compare snapshots of one chain) lose no layer they name.
    func collapsePlan(of volumeID: String, _ db: Database) throws -> CollapsePlan {
        guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return Self.collapsePlan(chain: try db.chain(endingAt: row.headLayerID), ownHiddenLayer: try ownHiddenSnapshotLayer(of: row, db))
    }

    /// `collapsePlan(of:_:)` over a chain (root first, head last) already read.
    private static func collapsePlan(chain: [LayerRow], ownHiddenLayer: Int64?) -> CollapsePlan {
        var position = chain.count - 2
        while position >= 0, chain[position].refCount == 1 + (chain[position].id == ownHiddenLayer ? 1 : 0) {
            position -= 1
        }
        if position == chain.count - 2 { return .nothing }
        if position < 0 { return .whole }
        return .keeping(KeptBase(position: position, layerID: chain[position].id))
    }

    /// The layer of the volume's hidden snapshot when no other volume names that snapshot.
    private func ownHiddenSnapshotLayer(of row: VolumeRow, _ db: Database) throws -> Int64? {
        guard let hidden = row.hiddenSnapshotID, let snapshot = try db.snapshotRow(id: hidden),
            try db.volumeRows(hiddenSnapshotID: hidden).count == 1
        else { return nil }
        return snapshot.layerID
    }

    /// Per cluster, the subclusters the layers above the kept base changed since it: walking down
    /// from the head's parent, the first of them that holds a subcluster decides, unless its copy
    /// record says it copied the subcluster up from below (then the next one holding it does); a
    /// discard is a change. Those layers are frozen: their maps and copy records no longer change.
    func changesAbove(_ base: KeptBase, of volumeID: String) throws -> [Int: UInt16] {
        let (sources, clusterSize) = try controlLock.withLock { _ in
            try catalog.read { db -> ([MapSource], UInt32) in
                guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
                let chain = try db.chain(endingAt: row.headLayerID)
                let dropped = chain[(base.position + 1)..<(chain.count - 1)].reversed()
                return (try openAll(dropped.map { mapSource(of: $0, withCopies: true) }), row.clusterSize)
            }
        }
        defer { for source in sources { source.close() } }
        let fullMask = Subclusters(clusterSize: Int(clusterSize)).fullMask
        var decided: [Int: UInt16] = [:]
        var changed: [Int: UInt16] = [:]
        for source in sources {
            var copied: [Int: UInt16] = [:]
            try source.copies?.forEachEntry { cluster, entry in
                copied[cluster] = entry.state == .partial ? entry.subclusterMask : fullMask
            }
            try source.map?.forEachEntry { cluster, entry in
                let held: UInt16
                switch entry.state {
                case .unallocated: return
                case .partial: held = entry.subclusterMask
                case .data, .zero: held = fullMask
                }
                let fresh = held & ~(decided[cluster] ?? 0) & ~(entry.state == .zero ? 0 : copied[cluster] ?? 0)
                guard fresh != 0 else { return }
                decided[cluster, default: 0] |= fresh
                changed[cluster, default: 0] |= fresh
            }
        }
        return changed
    }

    /// Commits a collapse with no I/O in flight. The plan is made again inside the transaction:
    /// a snapshot taken since froze the head (the layer it froze is read by the snapshot, so the
    /// walk stops higher), and then nothing changes (`.busy`).
    func finishCollapse(_ volume: OpenVolume, keeping base: KeptBase, scope: OpenVolume.CollapseScope, shouldStop: () -> Bool) throws {
        try controlLock.withLock { _ in
            guard !shouldStop() else { return }
            var freed: [Int64] = []
            try volume.finishFlatten(keeping: scope) { headLayerID, headBytes in
                freed = try catalog.write { db -> [Int64] in
                    let changed = StoreError(.busy, "the chain of volume \(volume.volumeID) changed during the collapse")
                    guard let row = try db.volumeRow(id: volume.volumeID), row.headLayerID == headLayerID else { throw changed }
                    let chain = try db.chain(endingAt: headLayerID)
                    let hiddenLayer = try ownHiddenSnapshotLayer(of: row, db)
                    guard Self.collapsePlan(chain: chain, ownHiddenLayer: hiddenLayer) == .keeping(base) else { throw changed }
                    guard let parentID = chain.last?.parentID else { return [] }
                    var freed: [Int64] = []
                    let dropped = Set(chain[(base.position + 1)..<(chain.count - 1)].map(\.id))
                    if let hiddenLayer, dropped.contains(hiddenLayer),
                        let hidden = row.hiddenSnapshotID, let snapshot = try db.snapshotRow(id: hidden)
                    {
                        try db.deleteSnapshotRow(id: hidden)
                        try db.clearHiddenSnapshot(ofVolume: row.id)
                        freed += try db.releaseReference(to: snapshot.layerID)
                    }
                    try db.setAllocatedBytes(headBytes, ofLayer: headLayerID)
                    let baseRow = try db.requireLayer(base.layerID)
                    try db.setParent(of: headLayerID, to: baseRow)
                    try db.addReference(to: base.layerID)
                    freed += try db.releaseReference(to: parentID)
                    return freed
                }
            }
            removeLayerFiles(freed)
        }
    }
}

extension Database {
    /// Puts a layer on another parent (a collapse drops the layers between).
    func setParent(of id: Int64, to parent: LayerRow) throws {
        try cachedStatement(sql: "UPDATE layers SET parent_id = ?, depth = ? WHERE id = ?")
            .execute(arguments: [parent.id, parent.depth + 1, id])
    }
}
