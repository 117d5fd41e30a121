import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// A collapse copies what the layers only one volume reads hold into its head and drops them,
/// keeping the layers something else reads (here a snapshot and its other clone).
@Suite(.blockingTolerant) struct CollapseTests {
    static let clusterSize = 16384
    static let size = 16 * clusterSize

    /// A clone of a kept snapshot, with two private frozen layers between it and its head: each
    /// from a snapshot taken, written over, and deleted. Touches whole clusters, a subcluster of a
    /// cluster the base holds (a mixed cluster), and discards a cluster the base holds.
    struct Layered {
        let store: BlockStore
        let golden: Snapshot
        let sibling: Volume
        let clone: Volume
        var expected: [UInt8]
        let goldenBytes: [UInt8]
    }

    static func layered(_ store: BlockStore) throws -> Layered {
        let base = try store.createVolume(name: "base", size: UInt64(size), clusterSize: UInt32(clusterSize))
        let goldenBytes = pattern(seed: 40, count: size)
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(goldenBytes, at: 0)
        try baseHandle.close()
        let golden = try store.createSnapshot(name: "golden", of: base.id)
        let sibling = try store.createVolume(name: "sibling", size: UInt64(size), source: .snapshot(id: golden.id))
        let clone = try store.createVolume(name: "clone", size: UInt64(size), source: .snapshot(id: golden.id))
        var expected = goldenBytes
        let handle = try store.open(volumeID: clone.id)
        func write(_ seed: UInt64, at offset: Int, count: Int) throws {
            let bytes = pattern(seed: seed, count: count)
            try handle.write(bytes, at: UInt64(offset))
            expected.replaceSubrange(offset..<offset + count, with: bytes)
        }
        try write(1, at: 1 * clusterSize, count: 3 * clusterSize)
        let t1 = try store.createSnapshot(name: "t1", of: clone.id)
        try write(2, at: 2 * clusterSize + 100, count: 500)
        try write(3, at: 5 * clusterSize, count: 4096)
        try handle.discard(at: UInt64(7 * clusterSize), length: UInt64(clusterSize))
        expected.replaceSubrange(7 * clusterSize..<8 * clusterSize, with: [UInt8](repeating: 0, count: clusterSize))
        let t2 = try store.createSnapshot(name: "t2", of: clone.id)
        try write(4, at: 9 * clusterSize, count: clusterSize)
        try write(5, at: 5 * clusterSize + 4096, count: 4096)
        try handle.close()
        try store.deleteSnapshot(id: t1.id)
        try store.deleteSnapshot(id: t2.id)
        return Layered(store: store, golden: golden, sibling: sibling, clone: clone, expected: expected, goldenBytes: goldenBytes)
    }

    @Test func collapsingKeepsTheSharedBaseAndDropsThePrivateLayers() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let setup = try Self.layered(store)
        let goldenLayer = try store.layerID(ofSnapshot: setup.golden.id)
        #expect(try store.volume(id: setup.clone.id).chainDepth == 4)
        let layersBefore = try store.layerCount()
        #expect(try store.hasPrivateLayersToCollapse(volumeID: setup.clone.id))
        #expect(try !store.hasPrivateLayersToCollapse(volumeID: setup.sibling.id))

        #expect(try store.collapsePrivateLayers(volumeID: setup.clone.id))
        #expect(try !store.hasPrivateLayersToCollapse(volumeID: setup.clone.id))
        let head = try store.headLayerID(ofVolume: setup.clone.id)
        #expect(try store.parentLayerID(of: head) == goldenLayer)
        #expect(try store.volume(id: setup.clone.id).chainDepth == 2)
        #expect(try store.layerCount() == layersBefore - 2)
        #expect(try store.contents(ofVolume: setup.clone.id) == setup.expected)
        #expect(try store.contents(ofVolume: setup.sibling.id) == setup.goldenBytes)
        #expect(try store.contents(ofSnapshot: setup.golden.id) == setup.goldenBytes)
        // Nothing left to collapse: the head's parent is the snapshot's layer.
        #expect(try !store.collapsePrivateLayers(volumeID: setup.clone.id))

        // Changed-block tracking still sees every write since the kept snapshot, and not the
        // base's subclusters the collapse copied into the mixed cluster 5.
        let after = try store.createSnapshot(name: "after", of: setup.clone.id)
        let changed = try store.changedExtents(from: setup.golden.id, to: after.id).extents
        let c = UInt64(Self.clusterSize)
        #expect(changed == [
            Extent(offset: 1 * c, length: 3 * c), Extent(offset: 5 * c, length: 8192),
            Extent(offset: 7 * c, length: c), Extent(offset: 9 * c, length: c),
        ])

        store.close()
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.contents(ofVolume: setup.clone.id) == setup.expected)
        #expect(try reopened.checkConsistency().isClean)
        let handle = try reopened.open(volumeID: setup.clone.id)
        try handle.write([9, 9, 9], at: 5 * c + 8192)
        var expected = setup.expected
        expected.replaceSubrange(Int(5 * c) + 8192..<Int(5 * c) + 8195, with: [9, 9, 9])
        #expect(try handle.readAll() == expected)
        try handle.close()
        #expect(try reopened.contents(ofSnapshot: after.id) == setup.expected)
    }

    @Test func aVolumeWithNothingSharedBelowCollapsesWhole() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 18, clusterSize: 4096)
        var expected = [UInt8](repeating: 0, count: 1 << 18)
        let handle = try store.open(volumeID: volume.id)
        for step in 0..<3 {
            let bytes = pattern(seed: UInt64(50 + step), count: 20_000)
            try handle.write(bytes, at: UInt64(step * 15_000))
            expected.replaceSubrange(step * 15_000..<step * 15_000 + 20_000, with: bytes)
            let snapshot = try store.createSnapshot(name: "s\(step)", of: volume.id)
            try store.deleteSnapshot(id: snapshot.id)
        }
        #expect(try store.volume(id: volume.id).chainDepth == 4)
        #expect(try store.collapsePrivateLayers(volumeID: volume.id))
        #expect(try store.volume(id: volume.id).chainDepth == 1)
        #expect(try store.layerCount() == 1)
        #expect(try handle.readAll() == expected)
        try handle.close()
        #expect(try store.checkConsistency().isClean)
    }

    @Test func aSnapshotInTheChainStopsTheCollapseAboveIt() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 18, clusterSize: 4096)
        let handle = try store.open(volumeID: volume.id)
        try handle.write(pattern(seed: 60, count: 8192), at: 0)
        let temporary = try store.createSnapshot(name: "gone", of: volume.id)
        try handle.write(pattern(seed: 61, count: 8192), at: 4096)
        let kept = try store.createSnapshot(name: "kept", of: volume.id)
        let keptBytes = try store.contents(ofSnapshot: kept.id)
        try handle.write(pattern(seed: 62, count: 8192), at: 8192)
        let upper = try store.createSnapshot(name: "upper", of: volume.id)
        try handle.write(pattern(seed: 63, count: 100), at: 50_000)
        try store.deleteSnapshot(id: temporary.id)
        try store.deleteSnapshot(id: upper.id)
        let contents = try handle.readAll()
        let keptLayer = try store.layerID(ofSnapshot: kept.id)

        #expect(try store.collapsePrivateLayers(volumeID: volume.id))
        #expect(try store.parentLayerID(of: try store.headLayerID(ofVolume: volume.id)) == keptLayer)
        // The layer below the kept snapshot is private too, but the snapshot reads it.
        #expect(try store.volume(id: volume.id).chainDepth == 3)
        #expect(try handle.readAll() == contents)
        #expect(try store.contents(ofSnapshot: kept.id) == keptBytes)
        try handle.close()
        #expect(try store.checkConsistency().isClean)
    }
}
