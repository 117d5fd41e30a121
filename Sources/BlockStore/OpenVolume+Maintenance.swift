/// Flush, head changes, growth, flatten and close of an open volume.
extension OpenVolume {
    /// Head map pages captured for writing, with the head they belong to.
    struct CapturedMap {
        var head: LayerFiles
        var chunks: [Int]
        var pages: UnsafeMutableRawBufferPointer
        var headBytes: UInt64
        var copies: CopiedSubclusters

        func release() { pages.deallocate() }
    }

    /// Makes every write that returned before this call durable: data, then map, then catalog
    /// (`persistAllocation` records the head's allocated bytes when they changed). A closed
    /// volume is `.invalidArgument`, or nothing to do with `closedIsDone` (its close already made
    /// everything durable).
    func flush(persistAllocation: (_ layerID: Int64, _ bytes: UInt64) throws -> Void, closedIsDone: Bool = false) throws {
        try flushLock.withLock { _ in
            let capturedIfOpen = try structure.withWriteLock { () throws -> CapturedMap? in
                guard !isClosed else {
                    if closedIsDone { return nil }
                    throw StoreError(.invalidArgument, "volume \(volumeID) is closed")
                }
                return captureDirtyMap()
            }
            guard let captured = capturedIfOpen else { return }
            defer { captured.release() }
            try persist(captured, holdingStructure: false, persistAllocation: persistAllocation)
        }
    }

    /// Copies the dirty head map pages. Called with `structure` held for writing, so every write
    /// whose entry is captured has already issued its pwrite; the fdatasync that follows covers it.
    func captureDirtyMap() -> CapturedMap {
        let chunks = index.takeDirtyChunks()
        let map = head.map
        let pageBytes = map.pageBytes
        let pages = UnsafeMutableRawBufferPointer.allocate(byteCount: max(chunks.count, 1) * pageBytes, alignment: 4096)
        for (number, chunk) in chunks.enumerated() {
            let page = UnsafeMutableRawBufferPointer(rebasing: pages[number * pageBytes..<(number + 1) * pageBytes])
            let entries = index.entries(chunk)
            map.encodePage({ slot in
                index.headMapEntry(entries, slot: slot, headPosition: headPosition, subclusters: subclusters)
            }, into: page)
        }
        return CapturedMap(head: head, chunks: chunks, pages: pages, headBytes: headAllocatedBytes, copies: copies)
    }

    /// Writes captured pages in the durable order; on failure the pages are marked dirty again.
    /// `holdingStructure`: the caller holds `structure` for writing (freeze, flatten, close), so
    /// marking them must not take it again: the lock is not recursive.
    func persist(_ captured: CapturedMap, holdingStructure: Bool,
                 persistAllocation: (Int64, UInt64) throws -> Void) throws {
        do {
            try captured.head.data.synchronizeData()
            if let lineage { try captured.copies.persist(in: lineage) }
            if !captured.chunks.isEmpty {
                let pageSize = captured.head.map.pageBytes
                for (number, chunk) in captured.chunks.enumerated() {
                    let page = UnsafeRawBufferPointer(rebasing: captured.pages[number * pageSize..<(number + 1) * pageSize])
                    try captured.head.map.writePage(chunk, entries: page)
                }
                try captured.head.map.file.synchronizeData()
            }
        } catch {
            let markDirtyAgain = {
                if captured.head === self.head { for chunk in captured.chunks { self.index.markDirty(chunk) } }
            }
            if holdingStructure { markDirtyAgain() } else { structure.withWriteLock(markDirtyAgain) }
            throw error
        }
        if captured.headBytes != persistedHeadBytes {
            try persistAllocation(captured.head.layerID, captured.headBytes)
            persistedHeadBytes = captured.headBytes
        }
    }

    /// Freezes the head and puts `newHead` on top, with no I/O in flight: every write that
    /// returned is in the frozen layer, every later one goes to the new head.
    /// `commit` runs the catalog transaction (given the frozen head's allocated bytes); when it
    /// throws nothing changes.
    func freezeHead(newHead: LayerFiles, commit: (_ frozenBytes: UInt64) throws -> Void) throws {
        try flushLock.withLock { _ in
            try structure.withWriteLock {
                guard !isClosed else { throw StoreError(.invalidArgument, "volume \(volumeID) is closed") }
                let captured = captureDirtyMap()
                defer { captured.release() }
                try persist(captured, holdingStructure: true) { _, _ in }
                if headMarkedDirty.load(ordering: .relaxed) {
                    try head.map.setDirty(false)
                    headMarkedDirty.store(false, ordering: .relaxed)
                }
                try commit(captured.headBytes)
                layers.append(newHead)
                copies.close()
                copies = CopiedSubclusters(layerID: newHead.layerID, clusterSize: clusterSize)
                headDataSubclusters.store(0, ordering: .relaxed)
                persistedHeadBytes = 0
            }
        }
    }

    /// Grows the volume; `commit` records the new size in the catalog first.
    func expand(to newSize: UInt64, commit: () throws -> Void) throws {
        try structure.withWriteLock {
            guard newSize > size else { return }
            try commit()
            size = newSize
            index.grow(toClusterCount: Int((newSize + UInt64(clusterSize) - 1) / UInt64(clusterSize)))
        }
    }

    // MARK: Flatten

    /// Copies every cluster the volume inherits into its head, a cluster at a time so I/O goes on.
    /// Returns false when `shouldStop` asked to give up.
    func copyUpInheritedClusters(shouldStop: () -> Bool, progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> Bool {
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
                    try copyUpIfInherited(cluster, scratch: &scratch)
                    cluster += 1
                }
                return cluster >= index.clusterCount
            }
            if done { return true }
        }
    }

    private func copyUpIfInherited(_ cluster: Int, scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let headPosition = self.headPosition
        let slot = cluster % ClusterIndex.chunkSize
        func inherited(_ entry: IndexEntry) -> Bool {
            entry.isMixed || (entry.hasData && entry.position! < headPosition)
        }
        guard inherited(index.entry(of: cluster)) else { return }
        let clusterStart = UInt64(cluster) << UInt64(clusterShift)
        try index.modifyChunk(cluster / ClusterIndex.chunkSize) { entries -> ((), Bool) in
            let current = IndexEntry(rawValue: entries[slot])
            guard inherited(current) else { return ((), false) }
            if current.isMixed {
                let held = entries.record(slot).mask(of: IndexEntry(position: headPosition, state: .data), count: subclusters.count)
                try completeMixedCluster(entries, cluster: cluster, scratch: &scratch)
                copies.record(cluster: cluster, mask: subclusters.fullMask & ~held)
                return ((), true)
            }
            try copyIntoHead(from: current.position!, at: clusterStart, length: clusterSize, scratch: &scratch)
            entries[slot] = IndexEntry(position: headPosition, state: .data).rawValue
            headDataSubclusters.add(subclusters.count, ordering: .relaxed)
            copies.record(cluster: cluster, mask: subclusters.fullMask)
            return ((), true)
        }
    }

    /// Last step of a flatten, with no I/O in flight: copies what is still inherited, makes the
    /// head durable, runs `commit` (the catalog detaches the head from its parent), then drops the
    /// lower layers from the chain and renumbers the index. Returns the head's allocated bytes.
    func finishFlatten(commit: (_ headLayerID: Int64, _ headBytes: UInt64) throws -> Void) throws {
        try flushLock.withLock { _ in
            try structure.withWriteLock {
                guard !isClosed else { throw StoreError(.invalidArgument, "volume \(volumeID) is closed") }
                guard headPosition > 0 else { return }
                try markHeadDirtyIfNeeded()
                var scratch: UnsafeMutableRawBufferPointer?
                defer { scratch?.deallocate() }
                for cluster in 0..<index.clusterCount { try copyUpIfInherited(cluster, scratch: &scratch) }
                let captured = captureDirtyMap()
                defer { captured.release() }
                try persist(captured, holdingStructure: true) { _, _ in }
                try commit(head.layerID, captured.headBytes)
                persistedHeadBytes = captured.headBytes
                recordsDiscardsAtBottom = true
                let oldHeadPosition = headPosition
                index.transformAll { entry in
                    entry.position == oldHeadPosition ? IndexEntry(position: 0, state: entry.isZero ? .zero : .data) : .none
                }
                let lower = layers.dropLast()
                layers = [head]
                for layer in lower { layer?.close() }
            }
        }
    }

    // MARK: Close

    /// Final flush, marks the head map clean and closes the files.
    func close(persistAllocation: (Int64, UInt64) throws -> Void) throws {
        try flushLock.withLock { _ in
            try structure.withWriteLock {
                guard !isClosed else { return }
                isClosed = true
                defer {
                    for layer in layers { layer?.close() }
                    copies.close()
                }
                let captured = captureDirtyMap()
                defer { captured.release() }
                try persist(captured, holdingStructure: true, persistAllocation: persistAllocation)
                if headMarkedDirty.load(ordering: .relaxed) {
                    try head.map.setDirty(false)
                    headMarkedDirty.store(false, ordering: .relaxed)
                }
            }
        }
    }
}
