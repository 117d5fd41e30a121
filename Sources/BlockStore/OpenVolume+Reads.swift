/// Reads: runs of clusters with one source, through the layer chain, blocking or from the page cache only.
extension OpenVolume {
    /// Reads a range: runs of clusters answered by one layer become one pread; clusters no layer
    /// holds, or recorded as zero, are filled with zeros; mixed clusters are read a run of
    /// subclusters at a time.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try structure.withReadLock { try readLocked(into: buffer, at: offset, cachedOnly: false) }
    }

    /// `read`, if it needs neither the disk nor a wait for the volume's lock: false (with
    /// `buffer` perhaps partly filled) when it would have waited, so that a caller that must not
    /// block (a network event loop) hands the read to a thread that may.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        do {
            return try structure.withReadLockIfFree { try readLocked(into: buffer, at: offset, cachedOnly: true) } != nil
        } catch is NotCached {
            return false
        }
    }

    private func readLocked(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, cachedOnly: Bool) throws {
        try checkOpenAndInRange(offset: offset, count: buffer.count)
        let end = offset + UInt64(buffer.count)
        var position = offset
        while position < end {
            let cluster = Int(position >> UInt64(clusterShift))
            let (entry, runLength) = run(startingAt: cluster, limit: Int((end - 1) >> UInt64(clusterShift)) - cluster + 1)
            let runEnd = min(end, UInt64(cluster + runLength) << UInt64(clusterShift))
            let target = UnsafeMutableRawBufferPointer(
                rebasing: buffer[Int(position - offset)..<Int(runEnd - offset)])
            if entry.isMixed {
                try readMixed(cluster, into: target, at: position, cachedOnly: cachedOnly)
            } else if entry.hasData, let owner = entry.position {
                try layers[owner]!.data.read(into: target, at: position, cachedOnly: cachedOnly)
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            }
            position = runEnd
        }
    }

    /// Whether two plain entries read from the same place (any two without data read zeros).
    static func readsAlike(_ entry: IndexEntry, _ other: IndexEntry) -> Bool {
        entry == other || (!entry.hasData && !other.hasData)
    }

    /// The entry of `cluster` and how many following clusters (up to `limit`) read from the same
    /// place. A mixed cluster is a run of its own.
    private func run(startingAt cluster: Int, limit: Int) -> (IndexEntry, Int) {
        let chunkSize = ClusterIndex.chunkSize
        var first: IndexEntry?
        var length = 0
        var current = cluster
        while length < limit {
            let chunk = current / chunkSize
            let entries = index.entries(chunk)
            let stop: Bool = {
                let upper = min(chunkSize, current % chunkSize + (limit - length))
                var slot = current % chunkSize
                while slot < upper {
                    let entry = IndexEntry(rawValue: entries?[slot] ?? 0)
                    if let first {
                        if first.isMixed || entry.isMixed || !Self.readsAlike(entry, first) { return true }
                    } else {
                        first = entry
                    }
                    length += 1
                    slot += 1
                }
                return false
            }()
            if stop { break }
            current = cluster + length
        }
        return (first ?? .none, max(length, 1))
    }
}
