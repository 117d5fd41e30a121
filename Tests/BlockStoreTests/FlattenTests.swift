import Foundation
import StrataTestSupport
import Synchronization
import Testing
@testable import BlockStore

/// Flatten copies what a volume inherits into its own head, by hand, in the background past the
/// soft depth limit, and while the volume is being written.
@Suite(.blockingTolerant) struct FlattenTests {
    @Test func flatteningACloneDetachesItAndReleasesItsParents() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size = 300_000
        let base = try store.createVolume(name: "base", size: UInt64(size), clusterSize: 16384)
        var expected = pattern(seed: 30, count: size)
        let handle = try store.open(volumeID: base.id)
        try handle.write(expected, at: 0)
        try handle.discard(at: 16384 * 3, length: 16384 * 2)
        expected.replaceSubrange(16384 * 3..<16384 * 5, with: [UInt8](repeating: 0, count: 16384 * 2))
        try handle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "c", size: UInt64(size), source: .snapshot(id: snapshot.id))
        let cloneHandle = try store.open(volumeID: clone.id)
        try cloneHandle.discard(at: 0, length: 16384)
        try cloneHandle.write([5, 5], at: 20_000)
        expected.replaceSubrange(0..<16384, with: [UInt8](repeating: 0, count: 16384))
        expected.replaceSubrange(20_000..<20_002, with: [5, 5])
        let golden = try store.layerID(ofSnapshot: snapshot.id)
        #expect(try store.layerReferenceCounts()[golden] == 3)

        try store.flatten(volumeID: clone.id)
        #expect(try store.volume(id: clone.id).chainDepth == 1)
        #expect(try store.parentLayerID(of: try store.headLayerID(ofVolume: clone.id)) == nil)
        #expect(try store.layerReferenceCounts()[golden] == 2)
        #expect(try cloneHandle.readAll() == expected)
        try cloneHandle.close()

        // The snapshot and its source can go; the flattened clone keeps every byte.
        try store.deleteSnapshot(id: snapshot.id)
        try store.deleteVolume(id: base.id)
        #expect(try store.layerCount() == 1)
        #expect(try store.contents(ofVolume: clone.id) == expected)
        store.close()
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.contents(ofVolume: clone.id) == expected)
        #expect(try reopened.checkConsistency().isClean)
    }

    @Test func flatteningACloneOfAVolumeReleasesTheHiddenSnapshot() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let source = try store.createVolume(name: "src", size: 1 << 18)
        let original = pattern(seed: 31, count: 1 << 18)
        let handle = try store.open(volumeID: source.id)
        try handle.write(original, at: 0)
        try handle.close()
        let clone = try store.createVolume(name: "copy", size: 1 << 18, source: .volume(id: source.id))
        #expect(try store.catalog.read { try $0.allSnapshotRows().count } == 1)
        try store.flatten(volumeID: clone.id)
        #expect(try store.catalog.read { try $0.allSnapshotRows().count } == 0)
        let sourceHead = try store.headLayerID(ofVolume: source.id)
        let frozen = try #require(try store.parentLayerID(of: sourceHead))
        #expect(try store.layerReferenceCounts() == [frozen: 1, sourceHead: 1, try store.headLayerID(ofVolume: clone.id): 1])
        #expect(try store.contents(ofVolume: clone.id) == original)
        try store.deleteVolume(id: source.id)
        #expect(try store.contents(ofVolume: clone.id) == original)
        #expect(try store.checkConsistency().isClean)
    }

    @Test func crossingTheSoftLimitFlattensInTheBackground() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions(soft: 3, hard: 10, background: true))
        let volume = try store.createVolume(name: "v", size: 1 << 18, clusterSize: 4096)
        var expected = [UInt8](repeating: 0, count: 1 << 18)
        let handle = try store.open(volumeID: volume.id)
        var snapshots: [(Snapshot, [UInt8])] = []
        for step in 0..<6 {
            let bytes = pattern(seed: UInt64(step), count: 10_000)
            try handle.write(bytes, at: UInt64(step * 30_000 + 11))
            expected.replaceSubrange(step * 30_000 + 11..<step * 30_000 + 10_011, with: bytes)
            snapshots.append((try store.createSnapshot(name: "s\(step)", of: volume.id), expected))
            store.waitForBackgroundWork()
            #expect(try store.volume(id: volume.id).chainDepth <= 3)
        }
        #expect(try handle.readAll() == expected)
        try handle.close()
        for (snapshot, contents) in snapshots {
            #expect(try store.contents(ofSnapshot: snapshot.id) == contents)
        }
        #expect(try store.checkConsistency().isClean)
    }

    @Test func deletingAVolumeWhileItFlattensInTheBackground() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions(soft: 2, hard: 10, background: true))
        let volume = try store.createVolume(name: "v", size: 1 << 22, clusterSize: 4096)
        let handle = try store.open(volumeID: volume.id)
        try handle.write(pattern(seed: 33, count: 1 << 22), at: 0)
        try handle.close()
        _ = try store.createSnapshot(name: "a", of: volume.id)
        _ = try store.createSnapshot(name: "b", of: volume.id)  // depth 3 > 2: flatten starts
        try store.deleteVolume(id: volume.id)
        do {
            _ = try store.open(volumeID: volume.id)
            Issue.record("a deleted volume opened")
        } catch {
            #expect(StoreError.Code.of(error) == .notFound)
        }
        store.waitForBackgroundWork()
        let report = try store.checkConsistency()
        #expect(report.isClean, "\(report)")
    }

    @Test func flattenWhileThreadsWrite() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size = 1 << 21
        let base = try store.createVolume(name: "base", size: UInt64(size), clusterSize: 4096)
        let original = pattern(seed: 32, count: size)
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(original, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "c", size: UInt64(size), source: .snapshot(id: snapshot.id))
        let handle = try store.open(volumeID: clone.id)
        let piece = 700
        let writesPerThread = 300
        let done = Atomic<Bool>(false)
        let writers = Thread {
            try? concurrently(3) { thread in
                for index in 0..<writesPerThread {
                    let offset = (index * 3 + thread) * piece
                    try handle.write(pattern(seed: UInt64(offset), count: piece), at: UInt64(offset))
                }
            }
            done.store(true, ordering: .releasing)
        }
        writers.start()
        try store.flatten(volumeID: clone.id)
        while !done.load(ordering: .acquiring) { usleep(1000) }
        var expected = original
        for index in 0..<writesPerThread * 3 {
            expected.replaceSubrange(index * piece..<(index + 1) * piece, with: pattern(seed: UInt64(index * piece), count: piece))
        }
        #expect(try store.volume(id: clone.id).chainDepth == 1)
        #expect(try handle.readAll() == expected)
        try handle.close()
        try store.deleteSnapshot(id: snapshot.id)
        try store.deleteVolume(id: base.id)
        #expect(try store.contents(ofVolume: clone.id) == expected)
        #expect(try store.checkConsistency().isClean)
    }
}
