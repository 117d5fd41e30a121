@testable import BlockStore

/// After a kill, changed-block listings may say more than changed (a flattened head's copy record
/// is dropped when its map was dirty) but never less: every byte that differs between two related
/// snapshots lies in a listed extent, and allocated extents cover every non-zero byte.
extension CrashModel {
    func verifyListings(_ store: BlockStore, ids: [String: String]) throws {
        for (targetName, target) in snapshots {
            let allocated = try store.allocatedExtents(ofSnapshot: ids[targetName]!)
            if let block = ListingChecks.uncoveredDifference(allocated.extents, target: target, base: nil) {
                throw Failure(description: "allocated \(targetName) misses the block at \(block), which holds data")
            }
            for (baseName, base) in snapshots where baseName != targetName {
                let delta: ExtentListing
                do {
                    delta = try store.changedExtents(from: ids[baseName]!, to: ids[targetName]!)
                } catch let error as StoreError where error.code == .unrelated {
                    continue
                }
                if let block = ListingChecks.uncoveredDifference(delta.extents, target: target, base: base) {
                    throw Failure(description: "delta \(baseName) → \(targetName) misses the block at \(block), which changed")
                }
            }
        }
    }
}
