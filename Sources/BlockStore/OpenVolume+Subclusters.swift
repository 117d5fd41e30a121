/// Mixed clusters: reads and writes of clusters whose subclusters come from different layers.
extension OpenVolume {
    /// Reads part of one mixed cluster: runs of subclusters with one owner become one pread.
    func readMixed(_ cluster: Int, into target: UnsafeMutableRawBufferPointer, at offset: UInt64, cachedOnly: Bool = false) throws {
        let record = index.entries(cluster / ClusterIndex.chunkSize)!.record(cluster % ClusterIndex.chunkSize)
        let clusterStart = UInt64(cluster) << UInt64(clusterShift)
        let shift = UInt64(subclusters.shift)
        let end = offset + UInt64(target.count)
        var position = offset
        while position < end {
            var subcluster = Int((position - clusterStart) >> shift)
            let owner = record[subcluster]
            repeat { subcluster += 1 } while subcluster < subclusters.count && clusterStart + (UInt64(subcluster) << shift) < end
                && Self.readsAlike(record[subcluster], owner)
            let runEnd = min(end, clusterStart + (UInt64(subcluster) << shift))
            let piece = UnsafeMutableRawBufferPointer(rebasing: target[Int(position - offset)..<Int(runEnd - offset)])
            if owner.hasData, let layer = owner.position {
                try layers[layer]!.data.read(into: piece, at: position, cachedOnly: cachedOnly)
            } else {
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            }
            position = runEnd
        }
    }

    /// Writes a piece of one mixed cluster: subclusters the head holds, the piece covers, or that
    /// have nothing below are written in place (one pwrite per run); a partly written subcluster
    /// over inherited data is copied up with the piece merged in. When the head then holds every
    /// subcluster, the cluster is the head's again.
    func writeSubclusters(_ piece: UnsafeRawBufferPointer, at start: UInt64, of entries: ChunkEntries, slot: Int,
                                  scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let record = entries.record(slot)
        let headData = IndexEntry(position: headPosition, state: .data)
        let head = self.head
        let clusterStart = (start >> UInt64(clusterShift)) << UInt64(clusterShift)
        let shift = UInt64(subclusters.shift)
        let end = start + UInt64(piece.count)
        var runStart: UInt64?
        var runNew: [Int] = []
        func writeRun(upTo runEnd: UInt64) throws {
            guard let begin = runStart else { return }
            runStart = nil
            do {
                try head.data.write(UnsafeRawBufferPointer(rebasing: piece[Int(begin - start)..<Int(runEnd - start)]), at: begin)
            } catch {
                for subcluster in runNew {
                    try? head.data.punchHole(at: clusterStart + (UInt64(subcluster) << shift), length: UInt64(subclusters.size))
                }
                throw error
            }
            for subcluster in runNew { record[subcluster] = headData }
            headDataSubclusters.add(runNew.count, ordering: .relaxed)
            runNew.removeAll()
        }
        var position = start
        while position < end {
            let subcluster = Int((position - clusterStart) >> shift)
            let subclusterStart = clusterStart + (UInt64(subcluster) << shift)
            let partEnd = min(end, subclusterStart + UInt64(subclusters.size))
            let owner = record[subcluster]
            let headHolds = owner == headData
            let covers = position == subclusterStart && partEnd >= min(subclusterStart + UInt64(subclusters.size), size)
            if headHolds || covers || !owner.hasData {
                if runStart == nil { runStart = position }
                if !headHolds { runNew.append(subcluster) }
            } else {
                try writeRun(upTo: position)
                try copyIntoHead(from: owner.position!, at: subclusterStart, length: subclusters.size,
                                 merging: UnsafeRawBufferPointer(rebasing: piece[Int(position - start)..<Int(partEnd - start)]),
                                 at: position, scratch: &scratch)
                record[subcluster] = headData
                headDataSubclusters.add(1, ordering: .relaxed)
            }
            position = partEnd
        }
        try writeRun(upTo: end)
        if record.mask(of: headData, count: subclusters.count) == subclusters.fullMask {
            entries[slot] = headData.rawValue
        }
    }

    /// Writes a whole mixed cluster: nothing below needs copying, the head just takes it all.
    func overwriteMixedCluster(_ entries: ChunkEntries, slot: Int, with piece: UnsafeRawBufferPointer, at start: UInt64) throws {
        let headData = IndexEntry(position: headPosition, state: .data)
        let held = entries.record(slot).mask(of: headData, count: subclusters.count)
        do {
            try head.data.write(piece, at: start)
        } catch {
            // Subclusters the head did not hold must keep reading zeros in its file.
            for subcluster in 0..<subclusters.count where held & (1 << subcluster) == 0 {
                try? head.data.punchHole(at: start + UInt64(subcluster << subclusters.shift), length: UInt64(subclusters.size))
            }
            throw error
        }
        entries[slot] = headData.rawValue
        headDataSubclusters.add(subclusters.count - held.nonzeroBitCount, ordering: .relaxed)
    }

    /// Copies every subcluster of a mixed cluster the head lacks into the head, so the head
    /// holds the whole cluster (flatten, format 1 heads, and writes covering the cluster).
    func completeMixedCluster(_ entries: ChunkEntries, cluster: Int, scratch: inout UnsafeMutableRawBufferPointer?) throws {
        let record = entries.record(cluster % ClusterIndex.chunkSize)
        let headData = IndexEntry(position: headPosition, state: .data)
        let clusterStart = UInt64(cluster) << UInt64(clusterShift)
        for subcluster in 0..<subclusters.count where record[subcluster] != headData {
            let owner = record[subcluster]
            let offset = clusterStart + (UInt64(subcluster) << UInt64(subclusters.shift))
            // Subclusters with nothing below already read zeros in the head's file.
            if owner.hasData, let layer = owner.position, offset < size {
                try copyIntoHead(from: layer, at: offset, length: subclusters.size, scratch: &scratch)
            }
            record[subcluster] = headData
            headDataSubclusters.add(1, ordering: .relaxed)
        }
        entries[cluster % ClusterIndex.chunkSize] = headData.rawValue
    }
}
