import GRDB

/// A byte range of a volume.
public struct Extent: Sendable, Hashable, CustomStringConvertible {
    public var offset: UInt64
    public var length: UInt64

    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }

    public var end: UInt64 { offset + length }
    public var description: String { "\(offset)+\(length)" }
}

/// What a snapshot holds, or what changed between two: ascending, non-overlapping, maximal runs.
/// Every extent starts on a multiple of `granularity` (the volume's subcluster size) and ends on
/// one or at `volumeSize`.
public struct ExtentListing: Sendable, Equatable {
    public var volumeSize: UInt64
    public var granularity: UInt64
    public var extents: [Extent]
}

/// Changed-block tracking: allocated and changed extents read from the layers' allocation maps.
///
/// A layer's map names exactly the clusters it took: whole clusters it wrote or discarded, and
/// the 4 KiB subclusters a partial write copied up. So the clusters changed from snapshot B to a
/// later T of the same chain are those the layers above B up to T hold, less what a flatten
/// copied up (`CopiedSubclusters`); when a flatten detached T's chain from B, the detached head's
/// lineage (`LineageDirectory`) supplies the maps of the layers in between. The maps are sparse
/// and read with SEEK_DATA, so the cost follows the map pages those layers wrote, not the size.
/// Only frozen layers are read, and their files are opened under the control lock, so a snapshot
/// deleted meanwhile cannot pull them away; the scan itself takes no lock the I/O path uses.
extension BlockStore {
    var lineageDirectory: LineageDirectory { LineageDirectory(layers: layerDirectory) }

    /// The extents of a snapshot some layer of its chain holds data for (a discarded cluster
    /// is not allocated; a cluster written with zeros is).
    public func allocatedExtents(ofSnapshot id: String) throws -> ExtentListing {
        let (snapshot, sources) = try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.read { db -> (ListedSnapshot, [MapSource]) in
                let snapshot = try Self.listedSnapshot(id, db)
                let chain = try db.chain(endingAt: snapshot.layerID)
                return (snapshot, try openAll(chain.map { mapSource(of: $0, withCopies: false) }))
            }
        }
        defer { for source in sources { source.close() } }
        let subclusters = Subclusters(clusterSize: Int(snapshot.clusterSize))
        var held: [Int: UInt16] = [:]
        for source in sources {
            try source.map?.forEachEntry { cluster, entry in
                switch entry.state {
                case .data: held[cluster] = subclusters.fullMask
                case .partial: held[cluster, default: 0] |= entry.subclusterMask
                case .zero: held[cluster] = nil
                case .unallocated: break
                }
            }
        }
        return listing(held, of: snapshot)
    }

    /// The extents whose contents may differ between `base` and the later snapshot `target` of
    /// the same chain: nothing that changed is missing; what is listed was written, discarded or
    /// copied up by a write since `base` (a rewrite with equal bytes counts as a change).
    /// `.unrelated` when `base` is not an earlier point of `target`'s chain.
    public func changedExtents(from base: String, to target: String) throws -> ExtentListing {
        let (targetRow, sources) = try controlLock.withLock { _ in
            try throwIfClosed()
            return try catalog.read { db -> (ListedSnapshot, [MapSource]) in
                let baseRow = try Self.listedSnapshot(base, db)
                let targetRow = try Self.listedSnapshot(target, db)
                let chain = try db.chain(endingAt: targetRow.layerID)
                if let index = chain.firstIndex(where: { $0.id == baseRow.layerID }) {
                    return (targetRow, try openAll(chain[(index + 1)...].map { mapSource(of: $0, withCopies: true) }))
                }
                let bottom = chain[0]
                let lineage = try db.lineage(of: bottom.id)
                guard let index = lineage.firstIndex(of: baseRow.layerID) else {
                    throw StoreError(.unrelated, "snapshot \(base) is not an earlier point of the chain of snapshot \(target)")
                }
                let lineageDirectory = self.lineageDirectory
                let sources = lineage[(index + 1)...].map { ancestor in
                    MapPaths(map: lineageDirectory.ancestorMapPath(of: bottom.id, ancestor),
                             copies: lineageDirectory.ancestorCopiesPath(of: bottom.id, ancestor))
                } + chain.map { mapSource(of: $0, withCopies: true) }
                return (targetRow, try openAll(sources))
            }
        }
        defer { for source in sources { source.close() } }
        let subclusters = Subclusters(clusterSize: Int(targetRow.clusterSize))
        var changed: [Int: UInt16] = [:]
        for source in sources {
            var copied: [Int: UInt16] = [:]
            try source.copies?.forEachEntry { cluster, entry in
                copied[cluster] = entry.state == .partial ? entry.subclusterMask : subclusters.fullMask
            }
            try source.map?.forEachEntry { cluster, entry in
                let taken = entry.state == .partial ? entry.subclusterMask : subclusters.fullMask
                let mask = taken & ~(copied[cluster] ?? 0)
                if mask != 0 { changed[cluster, default: 0] |= mask }
            }
        }
        return listing(changed, of: targetRow)
    }

    // MARK: Helpers

    /// What a listing needs of a snapshot, read with its chain.
    struct ListedSnapshot {
        var layerID: Int64
        var size: UInt64
        var clusterSize: UInt32
    }

    /// Where the map (and copy record) of one layer is; nil for what does not exist.
    struct MapPaths {
        var map: String?
        var copies: String?
    }

    /// The open map (and copy record) of one layer; nil files for what does not exist.
    struct MapSource {
        var map: AllocationMapFile?
        var copies: AllocationMapFile?

        init(_ paths: MapPaths) throws {
            map = try paths.map.flatMap { try Self.openIfPresent($0) }
            do {
                copies = try paths.copies.flatMap { try Self.openIfPresent($0) }
            } catch {
                map?.file.close()
                throw error
            }
        }

        func close() {
            map?.file.close()
            copies?.file.close()
        }

        private static func openIfPresent(_ path: String) throws -> AllocationMapFile? {
            guard SystemDirectory.fileExists(path) else { return nil }
            let file = try SystemFile.open(path, readOnly: true)
            do {
                return try AllocationMapFile.open(file).0
            } catch {
                file.close()
                throw error
            }
        }
    }

    func mapSource(of layer: LayerRow, withCopies: Bool) -> MapPaths {
        guard layer.materialized else { return MapPaths(map: nil, copies: nil) }
        return MapPaths(map: layerDirectory.mapPath(layer.id), copies: withCopies ? lineageDirectory.copiesPath(layer.id) : nil)
    }

    /// Opens every source, or none (a failure closes those already open).
    func openAll(_ paths: [MapPaths]) throws -> [MapSource] {
        var sources: [MapSource] = []
        do {
            for path in paths { sources.append(try MapSource(path)) }
        } catch {
            for source in sources { source.close() }
            throw error
        }
        return sources
    }

    private static func listedSnapshot(_ id: String, _ db: Database) throws -> ListedSnapshot {
        guard Identifier.isSnapshotID(id), let row = try db.snapshotRow(id: id), !row.hidden else {
            throw StoreError.notFound("snapshot \(id)")
        }
        return ListedSnapshot(layerID: row.layerID, size: row.size, clusterSize: try db.requireLayer(row.layerID).clusterSize)
    }

    /// Runs of subclusters, merged across clusters, clipped to the size.
    private func listing(_ masks: [Int: UInt16], of snapshot: ListedSnapshot) -> ExtentListing {
        let size = snapshot.size
        let clusterSize = UInt64(snapshot.clusterSize)
        let subclusters = Subclusters(clusterSize: Int(clusterSize))
        let subclusterSize = UInt64(subclusters.size)
        var extents: [Extent] = []
        for cluster in masks.keys.sorted() {
            let mask = masks[cluster]!
            let clusterStart = UInt64(cluster) * clusterSize
            var subcluster = 0
            while subcluster < subclusters.count {
                guard mask & (1 << subcluster) != 0 else {
                    subcluster += 1
                    continue
                }
                let first = subcluster
                while subcluster < subclusters.count && mask & (1 << subcluster) != 0 { subcluster += 1 }
                let start = clusterStart + UInt64(first) * subclusterSize
                let end = min(size, clusterStart + UInt64(subcluster) * subclusterSize)
                guard start < end else { break }
                if let last = extents.last, last.end == start {
                    extents[extents.count - 1].length += end - start
                } else {
                    extents.append(Extent(offset: start, length: end - start))
                }
            }
        }
        return ExtentListing(volumeSize: size, granularity: subclusterSize, extents: extents)
    }

    /// Gives a volume just opened its copy record and lineage flags.
    func attachLineage(_ volume: OpenVolume) throws {
        let lineage = lineageDirectory
        volume.lineage = lineage
        let headID = volume.head.layerID
        if SystemDirectory.fileExists(lineage.copiesPath(headID)) {
            do {
                let file = try SystemFile.open(lineage.copiesPath(headID))
                do {
                    try volume.copies.load(from: try AllocationMapFile.open(file).0)
                } catch {
                    file.close()
                    throw error
                }
            } catch {
                // Listings then count every cluster of the head as changed: more, never less.
                logger.warning("the copy record of layer \(headID) is unreadable, dropping it: \(error)")
                volume.copies.close()
                volume.copies = CopiedSubclusters(layerID: headID, clusterSize: volume.clusterSize)
                try lineage.forgetCopies(of: headID)
            }
        }
        volume.recordsDiscardsAtBottom = try catalog.read { try !$0.lineage(of: headID).isEmpty }
    }

    /// Records what a flatten detaches `head` from (in the detaching transaction; the links are
    /// durable before it commits).
    func recordLineage(of head: Int64, _ db: Database) throws {
        let former = try db.chain(endingAt: head).dropLast().map(\.id)
        guard let bottom = former.first else { return }
        let inherited = try db.lineage(of: bottom)
        try lineageDirectory.recordLineage(of: head, formerChain: former, inheritedFrom: bottom, layers: layerDirectory)
        try db.insertLineage(of: head, ancestors: inherited + former)
    }
}

/// Lineage rows (catalog migration "v3-lineage").
extension Database {
    /// The former chain of a detached head, oldest first; empty for a layer never detached.
    func lineage(of layerID: Int64) throws -> [Int64] {
        try Int64.fetchAll(
            try cachedStatement(sql: "SELECT ancestor_id FROM layer_lineage WHERE layer_id = ? ORDER BY position"), arguments: [layerID])
    }

    func insertLineage(of layerID: Int64, ancestors: [Int64]) throws {
        let statement = try cachedStatement(sql: "INSERT INTO layer_lineage (layer_id, position, ancestor_id) VALUES (?, ?, ?)")
        for (position, ancestor) in ancestors.enumerated() {
            try statement.execute(arguments: [layerID, position, ancestor])
        }
    }

    func deleteLineage(of layerID: Int64) throws {
        try cachedStatement(sql: "DELETE FROM layer_lineage WHERE layer_id = ?").execute(arguments: [layerID])
    }
}
