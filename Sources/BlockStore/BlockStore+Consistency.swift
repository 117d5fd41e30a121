import GRDB
import Logging

/// Reconciling the catalog with the layer files at open, and checking that they agree.
extension BlockStore {
    /// Runs before the store is used: a catalog row whose files are missing is `.corrupt` (and
    /// nothing is touched); layer files with no row, or of a layer the catalog says has none yet
    /// (a crash while creating them, before anything was written), are removed; dirty maps are
    /// recovered. Returns the highest layer number seen in a file name.
    static func reconcile(catalog: Catalog, layers: LayerDirectory, logger: Logger) throws -> Int64 {
        let allRows = try catalog.read { try $0.allLayers() }
        let rows = allRows.filter(\.materialized)
        let (files, _) = try layers.listFiles()
        let missing = rows.filter { files[$0.id] != [.data, .map] }.map(\.id)
        guard missing.isEmpty else {
            throw StoreError(.corrupt, "the catalog lists layers whose files are missing: \(missing)")
        }
        let known = Set(rows.map(\.id))
        let orphans = files.keys.filter { !known.contains($0) }.sorted()
        for layerID in orphans {
            logger.notice("collecting layer \(layerID): its files have no catalog row")
            try layers.removeLayer(layerID)
        }
        if !orphans.isEmpty { try SystemDirectory.synchronize(layers.path) }
        let lineage = LineageDirectory(layers: layers)
        let rowIDs = Set(allRows.map(\.id))
        let unknownLineage = try lineage.folders().filter { !rowIDs.contains($0) }
        if !unknownLineage.isEmpty {
            logger.notice("collecting the lineage of layers \(unknownLineage): they have no catalog row")
            try lineage.remove(unknownLineage)
        }
        for row in rows {
            _ = try recoverIfDirty(row, layers: layers, catalog: catalog, logger: logger)
        }
        return (orphans + files.keys + allRows.map(\.id)).max() ?? 0
    }

    /// Checks a layer's map header and recovers the map if it is dirty: at store open, and when a
    /// head whose last close failed (a full disk) is opened again in the same process. Returns
    /// the bytes a recovered map holds, nil when the map was clean. `currentBoot` nil: punch
    /// whatever is unmapped, even when the map was marked dirty in this boot.
    static func recoverIfDirty(_ row: LayerRow, layers: LayerDirectory, catalog: Catalog, logger: Logger,
                               currentBoot: BootIdentity? = BootIdentity.current) throws -> UInt64? {
        let files = try layers.openLayer(row.id, writable: !row.frozen)
        defer { files.close() }
        let header = try files.map.readHeader()
        guard header.layerID == row.id, header.clusterSize == row.clusterSize else {
            throw StoreError(.corrupt, "the map of layer \(row.id) describes layer \(header.layerID), cluster size \(header.clusterSize)")
        }
        guard header.dirty else { return nil }
        guard !row.frozen else { throw StoreError(.corrupt, "frozen layer \(row.id) has a dirty map") }
        let sameBoot = currentBoot != nil && header.dirtyBootID == currentBoot
        let bytes = try recoverDirtyMap(files, clusterSize: Int(row.clusterSize), sameBoot: sameBoot)
        try LineageDirectory(layers: layers).forgetCopies(of: row.id)
        try catalog.write { try $0.setAllocatedBytes(bytes, ofLayer: row.id) }
        try files.map.setDirty(false)
        logger.notice("recovered the dirty map of layer \(row.id)", metadata: [
            "unmappedData": "\(sameBoot ? "adopted (same boot)" : "punched (marked dirty in another boot)")",
        ])
        return bytes
    }

    /// A dirty map lags its data file: clusters (or subclusters of partial clusters) written but
    /// never mapped. After a reboot they are garbage from writes no flush acknowledged (or torn
    /// ones) and are punched out, restoring "unmapped reads zeros". In the boot that marked the
    /// map dirty they are writes the process completed before it died (a filesystem above may
    /// still be mounted and count on them): a subcluster wholly allocated is adopted into the map,
    /// one only partly allocated (a multi-page write cut between pages) is punched, and the
    /// write it belonged to, never acknowledged, is sent again by the kernel or reads as old.
    /// Returns the bytes the map holds.
    private static func recoverDirtyMap(_ files: LayerFiles, clusterSize: Int, sameBoot: Bool) throws -> UInt64 {
        let subclusters = Subclusters(clusterSize: clusterSize)
        var held: [Int: UInt16] = [:]
        var zeroed: Set<Int> = []
        try files.map.forEachEntry { cluster, entry in
            switch entry.state {
            case .data: held[cluster] = subclusters.fullMask
            case .partial: held[cluster] = entry.subclusterMask & subclusters.fullMask
            case .zero: zeroed.insert(cluster)
            case .unallocated: break
            }
        }
        let fileSize = try files.data.size()
        var adopted: [Int: MapEntry] = [:]
        var offset: UInt64 = 0
        var punched = 0
        while offset < fileSize, let start = files.data.nextData(from: offset) {
            let end = min(files.data.nextHole(from: start), fileSize)
            var cluster = Int(start / UInt64(clusterSize))
            while UInt64(cluster) * UInt64(clusterSize) < end {
                var mask = held[cluster] ?? 0
                let clusterStart = UInt64(cluster) * UInt64(clusterSize)
                if sameBoot && mask != subclusters.fullMask {
                    let whole = wholeSubclusters(files.data, clusterStart: clusterStart, subclusters, fileSize: fileSize)
                    let found = whole & ~mask
                    // A zero cluster (discarded over a parent) must not show the parent beside the
                    // adopted data, so it is adopted only when the write covered all of it.
                    let adoptable = zeroed.contains(cluster) ? (mask | found == subclusters.fullMask) : true
                    if found != 0 && adoptable && (files.map.supportsPartialClusters || mask | found == subclusters.fullMask) {
                        mask |= found
                        held[cluster] = mask
                        adopted[cluster] = mask == subclusters.fullMask ? MapEntry(.data) : MapEntry(.partial, subclusterMask: mask)
                    }
                }
                if mask == 0 {
                    try files.data.punchHole(at: clusterStart, length: UInt64(clusterSize))
                    punched += 1
                } else if mask != subclusters.fullMask {
                    for subcluster in 0..<subclusters.count where mask & (1 << subcluster) == 0 {
                        try files.data.punchHole(at: clusterStart + UInt64(subcluster << subclusters.shift), length: UInt64(subclusters.size))
                        punched += 1
                    }
                }
                cluster += 1
            }
            offset = max(end, start + 1)
        }
        // Data, then the map that describes it, as in every flush.
        if punched > 0 || !adopted.isEmpty { try files.data.synchronizeData() }
        if !adopted.isEmpty {
            for (cluster, entry) in adopted.sorted(by: { $0.key < $1.key }) { try files.map.writeEntry(entry, cluster: cluster) }
            try files.map.file.synchronizeData()
        }
        return held.values.reduce(0) { $0 + UInt64($1.nonzeroBitCount) << UInt64(subclusters.shift) }
    }

    /// The subclusters of a cluster whose every byte is allocated in the data file (no hole).
    private static func wholeSubclusters(_ data: SystemFile, clusterStart: UInt64, _ subclusters: Subclusters, fileSize: UInt64) -> UInt16 {
        var mask: UInt16 = 0
        for subcluster in 0..<subclusters.count {
            let start = clusterStart + UInt64(subcluster << subclusters.shift)
            let end = start + UInt64(subclusters.size)
            guard end <= fileSize, data.nextData(from: start) == start, data.nextHole(from: start) >= end else { continue }
            mask |= 1 << subcluster
        }
        return mask
    }

    /// Compares the catalog with the files and with itself. Heads of volumes open right now may
    /// legitimately be dirty and are not reported as such.
    public func checkConsistency() throws -> ConsistencyReport {
        try controlLock.withLock { _ in
            try throwIfClosed()
            var report = ConsistencyReport()
            let (layers, volumes, snapshots, counted) = try catalog.read { db in
                (try db.allLayers(), try db.allVolumeRows(), try db.allSnapshotRows(), try db.countedReferences())
            }
            let byID = Dictionary(uniqueKeysWithValues: layers.map { ($0.id, $0) })
            let (files, _) = try layerDirectory.listFiles()
            report.orphanFiles = files.keys.filter { byID[$0]?.materialized != true }.sorted().flatMap { id in
                files[id]!.map { layerDirectory.fileName(id, $0) }.sorted()
            }
            let openHeads = state.withLock { state in Set(state.open.keys) }
            let openHeadLayers = Set(volumes.filter { openHeads.contains($0.id) }.map(\.headLayerID))
            for layer in layers {
                if layer.materialized && files[layer.id] != [.data, .map] { report.missingLayerFiles.append(layer.id); continue }
                let expected = counted[layer.id] ?? 0
                if layer.refCount != expected {
                    report.referenceMismatches.append(.init(layerID: layer.id, recorded: layer.refCount, expected: expected))
                }
                if layer.refCount <= 0 || expected == 0 { report.danglingLayers.append(layer.id) }
                if let parent = layer.parentID {
                    if let parentRow = byID[parent] {
                        if !parentRow.frozen || parentRow.depth + 1 != layer.depth { report.brokenReferences.append("layer \(layer.id) over \(parent)") }
                    } else {
                        report.danglingLayers.append(layer.id)
                    }
                } else if layer.depth != 1 {
                    report.brokenReferences.append("layer \(layer.id) has depth \(layer.depth) without parent")
                }
                guard layer.materialized else { continue }
                do {
                    let file = try SystemFile.open(layerDirectory.mapPath(layer.id), readOnly: true)
                    defer { file.close() }
                    let (_, header) = try AllocationMapFile.open(file)
                    if header.layerID != layer.id || header.clusterSize != layer.clusterSize {
                        report.corruptMaps.append(layer.id)
                    } else if header.dirty && !openHeadLayers.contains(layer.id) {
                        report.dirtyMaps.append(layer.id)
                    }
                } catch {
                    report.corruptMaps.append(layer.id)
                }
            }
            for volume in volumes {
                if let head = byID[volume.headLayerID] {
                    if head.frozen { report.brokenReferences.append("volume \(volume.id) has frozen head \(head.id)") }
                } else {
                    report.brokenReferences.append("volume \(volume.id) → missing layer \(volume.headLayerID)")
                }
            }
            for snapshot in snapshots {
                if let layer = byID[snapshot.layerID] {
                    if !layer.frozen { report.brokenReferences.append("snapshot \(snapshot.id) on writable layer \(layer.id)") }
                } else {
                    report.brokenReferences.append("snapshot \(snapshot.id) → missing layer \(snapshot.layerID)")
                }
            }
            return report
        }
    }

    /// Recorded reference count of every layer (for tests and diagnostics).
    public func layerReferenceCounts() throws -> [Int64: Int] {
        try catalog.read { db in Dictionary(uniqueKeysWithValues: try db.allLayers().map { ($0.id, $0.refCount) }) }
    }

    /// Total space of the pool and what the store has allocated and promised.
    public func capacity() throws -> PoolCapacity {
        let space = try SystemDirectory.space(of: directory)
        let (allocated, provisioned) = try catalog.read { db -> (UInt64, UInt64) in
            var allocated: UInt64 = 0
            for layer in try db.allLayers() { allocated += layer.allocatedBytes }
            var provisioned: UInt64 = 0
            for volume in try db.allVolumeRows() { provisioned += volume.size }
            return (allocated, provisioned)
        }
        return PoolCapacity(totalBytes: space.total, freeBytes: space.free, allocatedBytes: allocated, provisionedBytes: provisioned)
    }

    /// How much the store holds, in one catalog read (for monitoring: cheap enough for every scrape).
    public func census() throws -> StoreCensus {
        try catalog.read { db in
            let volumes = try Row.fetchOne(db, sql: """
                SELECT COUNT(*) AS count, COALESCE(SUM(v.size), 0) AS provisioned, COALESCE(MAX(l.depth), 0) AS deepest
                FROM volumes v JOIN layers l ON l.id = v.head_layer_id
                """)!
            let layers = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS count, COALESCE(SUM(allocated_bytes), 0) AS allocated FROM layers")!
            let snapshots = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshots WHERE hidden = 0 AND origin_node IS NULL") ?? 0
            let hidden = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshots WHERE hidden = 1 AND origin_node IS NULL") ?? 0
            let replicas = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshots WHERE origin_node IS NOT NULL") ?? 0
            let imported = try Row.fetchOne(
                db, sql: "SELECT COUNT(*) AS count, COALESCE(SUM(allocated_bytes), 0) AS allocated FROM layers WHERE imported = 1")!
            let sharing = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(multi_node), 0) AS multi, COALESCE(SUM(moved_to IS NOT NULL), 0) AS moving,
                       (SELECT COUNT(DISTINCT r.volume_id) FROM remote_stagers r JOIN volumes w ON w.id = r.volume_id) AS staged
                FROM volumes
                """)!
            return StoreCensus(
                volumes: volumes["count"], snapshots: snapshots, hiddenSnapshots: hidden, layers: layers["count"],
                allocatedBytes: UInt64(max(0, layers["allocated"] as Int64)), provisionedBytes: UInt64(max(0, volumes["provisioned"] as Int64)),
                deepestChain: volumes["deepest"], replicaSnapshots: replicas, importedLayers: imported["count"],
                importedBytes: UInt64(max(0, imported["allocated"] as Int64)),
                multiNodeVolumes: sharing["multi"], remotelyStagedVolumes: sharing["staged"], movingVolumes: sharing["moving"])
        }
    }
}
