import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// Every chain shape, deleted in every order that matters, with the reference count of every
/// layer checked after each step and the data of what remains read back.
@Suite(.blockingTolerant) struct ChainShapeTests {
    /// A volume with three snapshots, each taken after a distinct write:
    /// L1 (s1) ← L2 (s2) ← L3 (s3) ← L4 (head of v).
    struct ThreeSnapshotChain {
        let store: BlockStore
        let volume: Volume
        let snapshots: [Snapshot]
        let layers: [Int64]
        /// Contents of s1, s2, s3 and the volume.
        let contents: [[UInt8]]

        init(_ store: BlockStore) throws {
            self.store = store
            let size = 200_000
            volume = try store.createVolume(name: "v", size: UInt64(size), clusterSize: 16384)
            var current = [UInt8](repeating: 0, count: size)
            var snapshots: [Snapshot] = []
            var contents: [[UInt8]] = []
            let handle = try store.open(volumeID: volume.id)
            for step in 0..<4 {
                let bytes = pattern(seed: UInt64(100 + step), count: 50_000)
                try handle.write(bytes, at: UInt64(step * 40_000))
                current.replaceSubrange(step * 40_000..<step * 40_000 + 50_000, with: bytes)
                contents.append(current)
                if step < 3 { snapshots.append(try store.createSnapshot(name: "s\(step + 1)", of: volume.id)) }
            }
            try handle.close()
            self.snapshots = snapshots
            self.contents = contents
            layers = try snapshots.map { try store.layerID(ofSnapshot: $0.id) } + [store.headLayerID(ofVolume: volume.id)]
        }

        func expectReferences(_ expected: [Int: Int], sourceLocation: SourceLocation = #_sourceLocation) throws {
            var byLayer: [Int64: Int] = [:]
            for (index, count) in expected { byLayer[layers[index]] = count }
            let actual = try store.layerReferenceCounts()
            #expect(actual == byLayer, sourceLocation: sourceLocation)
            let report = try store.checkConsistency()
            #expect(report.isClean, "\(report)", sourceLocation: sourceLocation)
        }
    }

    @Test func layersOfASnapshotChainAreReferencedByChildAndSnapshot() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let chain = try ThreeSnapshotChain(store)
        #expect(try store.parentLayerID(of: chain.layers[3]) == chain.layers[2])
        #expect(try store.parentLayerID(of: chain.layers[1]) == chain.layers[0])
        #expect(try store.parentLayerID(of: chain.layers[0]) == nil)
        #expect(try store.volume(id: chain.volume.id).chainDepth == 4)
        try chain.expectReferences([0: 2, 1: 2, 2: 2, 3: 1])
        for (snapshot, expected) in zip(chain.snapshots, chain.contents) {
            #expect(try store.contents(ofSnapshot: snapshot.id) == expected)
        }
        #expect(try store.contents(ofVolume: chain.volume.id) == chain.contents[3])
    }

    @Test func deletingFirstThenMiddleThenLastSnapshotThenTheVolume() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let chain = try ThreeSnapshotChain(store)
        try store.deleteSnapshot(id: chain.snapshots[0].id)
        try chain.expectReferences([0: 1, 1: 2, 2: 2, 3: 1])
        #expect(try store.contents(ofSnapshot: chain.snapshots[1].id) == chain.contents[1])
        try store.deleteSnapshot(id: chain.snapshots[1].id)
        try chain.expectReferences([0: 1, 1: 1, 2: 2, 3: 1])
        #expect(try store.contents(ofSnapshot: chain.snapshots[2].id) == chain.contents[2])
        try store.deleteSnapshot(id: chain.snapshots[2].id)
        try chain.expectReferences([0: 1, 1: 1, 2: 1, 3: 1])
        #expect(try store.contents(ofVolume: chain.volume.id) == chain.contents[3])
        try store.deleteVolume(id: chain.volume.id)
        try chain.expectReferences([:])
        #expect(try store.layerCount() == 0)
        #expect(try SystemDirectory.entries(of: directory.path + "/layers").isEmpty)
    }

    @Test func deletingTheMiddleSnapshotKeepsItsLayerForTheOthers() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let chain = try ThreeSnapshotChain(store)
        try store.deleteSnapshot(id: chain.snapshots[1].id)
        try chain.expectReferences([0: 2, 1: 1, 2: 2, 3: 1])
        #expect(try store.contents(ofSnapshot: chain.snapshots[0].id) == chain.contents[0])
        #expect(try store.contents(ofSnapshot: chain.snapshots[2].id) == chain.contents[2])
        #expect(try store.contents(ofVolume: chain.volume.id) == chain.contents[3])
    }

    @Test func deletingTheVolumeFirstKeepsItsSnapshots() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let chain = try ThreeSnapshotChain(store)
        try store.deleteVolume(id: chain.volume.id)
        try chain.expectReferences([0: 2, 1: 2, 2: 1])
        for (snapshot, expected) in zip(chain.snapshots, chain.contents) {
            #expect(try store.contents(ofSnapshot: snapshot.id) == expected)
        }
        // Deleting the last (newest) snapshot now frees its layer; the middle still holds the rest.
        try store.deleteSnapshot(id: chain.snapshots[2].id)
        try chain.expectReferences([0: 2, 1: 1])
        try store.deleteSnapshot(id: chain.snapshots[0].id)
        try chain.expectReferences([0: 1, 1: 1])
        #expect(try store.contents(ofSnapshot: chain.snapshots[1].id) == chain.contents[1])
        try store.deleteSnapshot(id: chain.snapshots[1].id)
        try chain.expectReferences([:])
    }

    @Test func deletingTheLeafVolumeFreesOnlyItsHead() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let chain = try ThreeSnapshotChain(store)
        let clone = try store.createVolume(name: "leaf", size: 200_000, source: .snapshot(id: chain.snapshots[2].id))
        let cloneHead = try store.headLayerID(ofVolume: clone.id)
        var expected = [chain.layers[0]: 2, chain.layers[1]: 2, chain.layers[2]: 3, chain.layers[3]: 1, cloneHead: 1]
        #expect(try store.layerReferenceCounts() == expected)
        #expect(clone.chainDepth == 4)
        try store.deleteVolume(id: clone.id)
        expected[cloneHead] = nil
        expected[chain.layers[2]] = 2
        #expect(try store.layerReferenceCounts() == expected)
        #expect(try store.checkConsistency().isClean)
    }

    @Test func aSnapshotWithClonesIsHiddenAtOnceAndFreedWithTheLastClone() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size = 100_000
        let base = try store.createVolume(name: "base", size: UInt64(size))
        let original = pattern(seed: 20, count: size)
        let handle = try store.open(volumeID: base.id)
        try handle.write(original, at: 0)
        try handle.close()
        let snapshot = try store.createSnapshot(name: "golden", of: base.id)
        let golden = try store.layerID(ofSnapshot: snapshot.id)
        let baseHead = try store.headLayerID(ofVolume: base.id)
        let clones = try (0..<3).map { try store.createVolume(name: "c\($0)", size: UInt64(size), source: .snapshot(id: snapshot.id)) }
        let heads = try clones.map { try store.headLayerID(ofVolume: $0.id) }
        var expected = [golden: 5, baseHead: 1, heads[0]: 1, heads[1]: 1, heads[2]: 1]
        #expect(try store.layerReferenceCounts() == expected)

        try store.deleteSnapshot(id: snapshot.id)
        #expect(throws: StoreError.self) { try store.snapshot(id: snapshot.id) }
        #expect(try store.snapshot(named: "golden") == nil)
        #expect(try store.listSnapshots(after: nil, limit: 0).items.isEmpty)
        #expect(throws: StoreError.self) {
            try store.createVolume(name: "late", size: UInt64(size), source: .snapshot(id: snapshot.id))
        }
        expected[golden] = 4
        #expect(try store.layerReferenceCounts() == expected)
        for clone in clones { #expect(try store.contents(ofVolume: clone.id) == original) }

        try store.deleteVolume(id: base.id)
        expected[golden] = 3
        expected[baseHead] = nil
        #expect(try store.layerReferenceCounts() == expected)
        try store.deleteVolume(id: clones[0].id)
        try store.deleteVolume(id: clones[1].id)
        expected = [golden: 1, heads[2]: 1]
        #expect(try store.layerReferenceCounts() == expected)
        #expect(try store.contents(ofVolume: clones[2].id) == original)
        try store.deleteVolume(id: clones[2].id)
        #expect(try store.layerReferenceCounts() == [:])
        #expect(try store.checkConsistency().isClean)
    }

    @Test func aCloneOfAVolumeUsesAHiddenSnapshotReleasedWithTheClone() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let source = try store.createVolume(name: "src", size: 65536 * 2)
        let original = pattern(seed: 21, count: 65536 * 2)
        let handle = try store.open(volumeID: source.id)
        try handle.write(original, at: 0)
        let frozen = try store.headLayerID(ofVolume: source.id)
        // Cloned while open: the handle keeps writing into the source's new head.
        let clone = try store.createVolume(name: "copy", size: 65536 * 3, source: .volume(id: source.id))
        try handle.write([1, 2, 3], at: 0)
        try handle.close()
        #expect(clone.source == .volume(id: source.id))
        #expect(clone.chainDepth == 2)
        #expect(try store.listSnapshots(after: nil, limit: 0).items.isEmpty)
        let sourceHead = try store.headLayerID(ofVolume: source.id)
        let cloneHead = try store.headLayerID(ofVolume: clone.id)
        #expect(try store.layerReferenceCounts() == [frozen: 3, sourceHead: 1, cloneHead: 1])
        #expect(try store.contents(ofVolume: clone.id) == original + [UInt8](repeating: 0, count: 65536))
        #expect(try store.contents(ofVolume: source.id).prefix(3) == [1, 2, 3])

        try store.deleteVolume(id: clone.id)
        #expect(try store.layerReferenceCounts() == [frozen: 1, sourceHead: 1])
        #expect(try store.checkConsistency().isClean)
    }

    @Test func clonesOfClonesStackTheirChains() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        var volume = try store.createVolume(name: "g0", size: 65536 * 4, clusterSize: 4096)
        var expected = [UInt8](repeating: 0, count: 65536 * 4)
        for generation in 1...5 {
            let handle = try store.open(volumeID: volume.id)
            let bytes = pattern(seed: UInt64(generation), count: 3000)
            try handle.write(bytes, at: UInt64(generation * 20_000 + 7))
            expected.replaceSubrange(generation * 20_000 + 7..<generation * 20_000 + 3007, with: bytes)
            try handle.close()
            let snapshot = try store.createSnapshot(name: "snap\(generation)", of: volume.id)
            volume = try store.createVolume(name: "g\(generation)", size: 65536 * 4, source: .snapshot(id: snapshot.id))
            #expect(volume.chainDepth == generation + 1)
            #expect(volume.clusterSize == 4096)
            #expect(try store.contents(ofVolume: volume.id) == expected)
        }
        #expect(try store.checkConsistency().isClean)
    }
}
