/// Flush, head changes, growth and close of an open volume (flatten: `OpenVolume+Flatten.swift`).
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
