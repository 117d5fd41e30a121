@testable import BlockStore

/// The model's check of changed-block listings: every byte that differs between two snapshots of
/// one chain lies in a listed extent, and every listed cluster was written or discarded between
/// them (flattens, background or not, copy up without counting as changes); snapshots of
/// unrelated chains are refused; allocated extents cover every non-zero byte.
extension ModelBasedTests.Run {
    func verifyListings() throws {
        for (targetName, target) in model.snapshots {
            let history = model.snapshotHistory[targetName]!
            let allocated = try store.allocatedExtents(ofSnapshot: target.id)
            try checkShape(allocated, size: target.bytes.count, "allocated \(targetName)")
            if let block = ListingChecks.uncoveredDifference(allocated.extents, target: target.bytes, base: nil) {
                throw StoreError(.corrupt, "allocated \(targetName) misses the block at \(block), which holds data, after \(log.suffix(8))")
            }
            for (baseName, base) in model.snapshots where baseName != targetName {
                guard let touched = history.touched[baseName] else {
                    do {
                        _ = try store.changedExtents(from: base.id, to: target.id)
                        throw StoreError(.corrupt, "delta \(baseName) → \(targetName) of unrelated snapshots was answered after \(log.suffix(8))")
                    } catch let error as StoreError where error.code == .unrelated {}
                    continue
                }
                let delta = try store.changedExtents(from: base.id, to: target.id)
                let what = "delta \(baseName) → \(targetName)"
                try checkShape(delta, size: target.bytes.count, what)
                if let block = ListingChecks.uncoveredDifference(delta.extents, target: target.bytes, base: base.bytes) {
                    throw StoreError(.corrupt, "\(what) misses the block at \(block), which changed, after \(log.suffix(8))")
                }
                for extent in delta.extents {
                    let clusters = Int(extent.offset) / history.clusterSize...Int(extent.end - 1) / history.clusterSize
                    if let untouched = clusters.first(where: { !touched.contains($0) }) {
                        throw StoreError(.corrupt, "\(what) lists cluster \(untouched), which nothing wrote, after \(log.suffix(8))")
                    }
                }
            }
        }
    }

    private func checkShape(_ listing: ExtentListing, size: Int, _ what: String) throws {
        guard listing.volumeSize == UInt64(size) else { throw StoreError(.corrupt, "\(what): volume size \(listing.volumeSize), not \(size)") }
        var previousEnd: UInt64?
        for extent in listing.extents {
            guard extent.length > 0, extent.end <= UInt64(size), extent.offset % listing.granularity == 0,
                  extent.end % listing.granularity == 0 || extent.end == UInt64(size),
                  previousEnd.map({ $0 < extent.offset }) ?? true
            else { throw StoreError(.corrupt, "\(what): extent \(extent) is misplaced in \(listing.extents.prefix(20))") }
            previousEnd = extent.end
        }
    }
}
