/// Flatten of an open volume: copying what the head inherits into the head, then dropping the
/// layers below from the chain. A whole flatten keeps no layer below the head; a collapse keeps
/// the chain up to a shared base (say a golden image's layers, which other volumes read and
/// other nodes hold too) and copies only what the private layers above it hold.
extension OpenVolume {
    /// What a collapse keeps: the chain up to `base` (a position), and per cluster the
    /// subclusters the dropped layers changed since it (the rest of what they hold was copied up
    /// from below `base`, so changed-block tracking must go on counting it as unchanged).
    struct CollapseScope: Sendable {
        var base: Int
        var changedSinceBase: [Int: UInt16]
    }

    /// Copies every cluster the head inherits from above the scope's base (no scope: from any
    /// layer) into the head, a cluster at a time so I/O goes on. Returns false when `shouldStop`
    /// asked to give up.
    func copyUpInheritedClusters(
        above scope: CollapseScope? = nil, shouldStop: () -> Bool, progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) throws -> Bool {
        var cluster = 0
        while true {
            if shouldStop() { return false }
            progress(cluster, structure.withReadLock { index.clusterCount })
            let done = try structure.withReadLock { () throws -> Bool in
                guard !isClosed else { throw StoreError(.invalidArgument, "volume \(volumeID) is closed") }
                try markHeadDirtyIfNeeded()
                var scratch: UnsafeMutableRawBufferPointer?
                defer { scratch?.deallocate() }
                let batchEnd = min(index.clusterCount, cluster + 256)
                while cluster < batchEnd {
                    try copyUpIfInherited(cluster, above: scope, scratch: &scratch)
                    cluster += 1
                }
                return cluster >= index.clusterCount
            }
            if done { return true }
        }
    }

    /// True for a position strictly between the kept base and the head: a layer the flatten drops.
    private func isDropped(_ position: Int?, above base: Int?, headPosition: Int) -> Bool {
        guard let position else { return false }
        return position < headPosition && position > (base ?? -1)
    }

    private func copyUpIfInherited(_ cluster: Int, above scope: CollapseScope?, scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let headPosition = self.headPosition
        let slot = cluster % ClusterIndex.chunkSize
        let count = subclusters.count
        let base = scope?.base
        // Changed-block tracking counts a copy-up as no change: what a whole flatten copies, and
        // what a collapse copies that the dropped layers did not change since the kept base.
        let unchanged = subclusters.fullMask & ~(scope?.changedSinceBase[cluster] ?? 0)
        func inherited(_ entry: IndexEntry, _ entries: ChunkEntries?) -> Bool {
            if entry.isMixed {
                // A whole flatten completes every mixed cluster; a collapse only those that take
                // a subcluster from a dropped layer.
                guard base != nil, let entries else { return true }
                let record = entries.record(slot)
                return (0..<count).contains { isDropped(record[$0].position, above: base, headPosition: headPosition) }
            }
            if base == nil { return entry.hasData && entry.position! < headPosition }
            // A collapse also carries a discard a dropped layer recorded: the head must hide what
            // the kept base holds there.
            return isDropped(entry.position, above: base, headPosition: headPosition)
        }
        guard inherited(index.entry(of: cluster), index.entries(cluster / ClusterIndex.chunkSize)) else { return }
        let clusterStart = UInt64(cluster) << UInt64(clusterShift)
        try index.modifyChunk(cluster / ClusterIndex.chunkSize) { entries -> ((), Bool) in
            let current = IndexEntry(rawValue: entries[slot])
            guard inherited(current, entries) else { return ((), false) }
            if current.isMixed {
                let record = entries.record(slot)
                let held = record.mask(of: IndexEntry(position: headPosition, state: .data), count: count)
                try completeMixedCluster(entries, cluster: cluster, scratch: &scratch)
                copies.record(cluster: cluster, mask: unchanged & ~held)
                return ((), true)
            }
            if current.isZero {
                entries[slot] = IndexEntry(position: headPosition, state: .zero).rawValue
                return ((), true)
            }
            try copyIntoHead(from: current.position!, at: clusterStart, length: clusterSize, scratch: &scratch)
            entries[slot] = IndexEntry(position: headPosition, state: .data).rawValue
            headDataSubclusters.add(count, ordering: .relaxed)
            copies.record(cluster: cluster, mask: unchanged)
            return ((), true)
        }
    }

    /// Last step of a flatten, with no I/O in flight: copies what is still inherited from above
    /// `base`, makes the head durable, runs `commit` (the catalog puts the head on the kept base,
    /// or on nothing), then drops the other layers from the chain and renumbers the index.
    func finishFlatten(keeping scope: CollapseScope? = nil, commit: (_ headLayerID: Int64, _ headBytes: UInt64) throws -> Void) throws {
        try flushLock.withLock { _ in
            try structure.withWriteLock {
                guard !isClosed else { throw StoreError(.invalidArgument, "volume \(volumeID) is closed") }
                let base = scope?.base
                let newHeadPosition = (base ?? -1) + 1
                guard headPosition > newHeadPosition else { return }
                try markHeadDirtyIfNeeded()
                var scratch: UnsafeMutableRawBufferPointer?
                defer { scratch?.deallocate() }
                for cluster in 0..<index.clusterCount { try copyUpIfInherited(cluster, above: scope, scratch: &scratch) }
                let captured = captureDirtyMap()
                defer { captured.release() }
                try persist(captured, holdingStructure: true) { _, _ in }
                try commit(head.layerID, captured.headBytes)
                persistedHeadBytes = captured.headBytes
                if base == nil { recordsDiscardsAtBottom = true }
                let oldHeadPosition = headPosition
                index.transformAll { entry in
                    guard let position = entry.position else { return base == nil ? .none : entry }
                    if position == oldHeadPosition { return IndexEntry(position: newHeadPosition, state: entry.isZero ? .zero : .data) }
                    return position < newHeadPosition ? entry : .none
                }
                let dropped = layers[newHeadPosition..<oldHeadPosition]
                layers = Array(layers[..<newHeadPosition]) + [head]
                for layer in dropped { layer?.close() }
            }
        }
    }
}
