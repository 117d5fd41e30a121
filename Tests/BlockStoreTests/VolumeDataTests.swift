import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// Data written through the store reads back byte-exact, at any alignment and through clones.
@Suite(.blockingTolerant) struct VolumeDataTests {
    @Test(arguments: [UInt32(4096), 65536, 1 << 20])
    func unalignedWritesReadBackExactly(clusterSize: UInt32) throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size: UInt64 = 3 * UInt64(clusterSize) + 12345
        let volume = try store.createVolume(name: "v", size: size, clusterSize: clusterSize)
        let handle = try store.open(volumeID: volume.id)
        var model = [UInt8](repeating: 0, count: Int(size))
        var generator = SeededGenerator(seed: UInt64(clusterSize))
        for step in 0..<200 {
            let offset = Int.random(in: 0..<Int(size), using: &generator)
            let count = Int.random(in: 1...min(Int(size) - offset, Int(clusterSize) * 2), using: &generator)
            let bytes = pattern(seed: UInt64(step), count: count)
            try handle.write(bytes, at: UInt64(offset))
            model.replaceSubrange(offset..<offset + count, with: bytes)
        }
        #expect(try handle.readAll() == model)
        // Odd-sized reads at odd offsets.
        for _ in 0..<100 {
            let offset = Int.random(in: 0..<Int(size), using: &generator)
            let count = Int.random(in: 0...Int(size) - offset, using: &generator)
            #expect(try handle.read(count: count, at: UInt64(offset)) == Array(model[offset..<offset + count]))
        }
        try handle.close()
        store.close()

        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.contents(ofVolume: volume.id) == model)
        #expect(try reopened.checkConsistency().isClean)
    }

    @Test func unwrittenVolumeReadsZerosAndRangesAreChecked() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 100_000)
        let handle = try store.open(volumeID: volume.id)
        #expect(try handle.readAll() == [UInt8](repeating: 0, count: 100_000))
        #expect(try handle.read(count: 0, at: 100_000) == [])
        #expect(throws: StoreError.self) { try handle.read(count: 1, at: 100_000) }
        #expect(throws: StoreError.self) { try handle.write([1, 2], at: 99_999) }
        #expect(throws: StoreError.self) { try handle.discard(at: 99_000, length: 1001) }
        do {
            _ = try handle.read(count: 10, at: UInt64.max - 5)
            Issue.record("a read past the end succeeded")
        } catch {
            #expect(StoreError.Code.of(error) == .outOfRange)
        }
        try handle.close()
    }

    @Test func clonesAreIsolatedFromSiblingsAndTheirSnapshot() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size: UInt64 = 512 * 1024
        let base = try store.createVolume(name: "base", size: size)
        let original = pattern(seed: 1, count: Int(size))
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(original, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "golden", of: base.id)
        let first = try store.createVolume(name: "first", size: size, source: .snapshot(id: snapshot.id))
        let second = try store.createVolume(name: "second", size: size, source: .snapshot(id: snapshot.id))

        let firstHandle = try store.open(volumeID: first.id)
        let written = pattern(seed: 2, count: 70_000)
        try firstHandle.write(written, at: 1000)  // partial first cluster, a whole one, partial third
        var expected = original
        expected.replaceSubrange(1000..<71_000, with: written)
        #expect(try firstHandle.readAll() == expected)
        try firstHandle.close()

        #expect(try store.contents(ofVolume: first.id) == expected)
        #expect(try store.contents(ofVolume: second.id) == original)
        #expect(try store.contents(ofSnapshot: snapshot.id) == original)
        #expect(try store.contents(ofVolume: base.id) == original)
        #expect(try store.checkConsistency().isClean)
    }

    @Test func discardOverInheritedDataReadsZerosAndHidesTheParent() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size: UInt64 = 256 * 1024
        let base = try store.createVolume(name: "base", size: size, clusterSize: 65536)
        let original = pattern(seed: 3, count: Int(size))
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(original, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "c", size: size, source: .snapshot(id: snapshot.id))
        let handle = try store.open(volumeID: clone.id)
        // A whole inherited cluster, then a partial one, then a range crossing two clusters.
        try handle.discard(at: 65536, length: 65536)
        try handle.discard(at: 10, length: 100)
        try handle.discard(at: 3 * 65536 - 50, length: 100)
        var expected = original
        expected.replaceSubrange(65536..<131_072, with: [UInt8](repeating: 0, count: 65536))
        expected.replaceSubrange(10..<110, with: [UInt8](repeating: 0, count: 100))
        expected.replaceSubrange(3 * 65536 - 50..<3 * 65536 + 50, with: [UInt8](repeating: 0, count: 100))
        #expect(try handle.readAll() == expected)
        // Writing part of a discarded cluster must not bring the parent's bytes back.
        try handle.write([9, 9, 9], at: 70_000)
        expected.replaceSubrange(70_000..<70_003, with: [9, 9, 9])
        #expect(try handle.readAll() == expected)
        try handle.flush()
        try handle.close()
        store.close()

        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.contents(ofVolume: clone.id) == expected)
        #expect(try reopened.contents(ofSnapshot: snapshot.id) == original)
        #expect(try reopened.checkConsistency().isClean)
    }

    @Test func discardInAVolumeWithoutParentFreesSpace() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20, clusterSize: 65536)
        let handle = try store.open(volumeID: volume.id)
        try handle.write(pattern(seed: 4, count: 1 << 20), at: 0)
        #expect(try store.volume(id: volume.id).allocatedBytes == 1 << 20)
        try handle.discard(at: 0, length: 1 << 19)
        #expect(try store.volume(id: volume.id).allocatedBytes == 1 << 19)
        #expect(try handle.read(count: 1 << 19, at: 0) == [UInt8](repeating: 0, count: 1 << 19))
        try handle.close()
    }

    @Test func expandedRangeReadsZerosAndAcceptsWrites() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 100_000, clusterSize: 65536)
        let handle = try store.open(volumeID: volume.id)
        let original = pattern(seed: 5, count: 100_000)
        try handle.write(original, at: 0)
        let expanded = try store.expandVolume(id: volume.id, to: 300_000)
        #expect(expanded.size == 300_000)
        #expect(handle.size == 300_000)
        #expect(try handle.read(count: 200_000, at: 100_000) == [UInt8](repeating: 0, count: 200_000))
        try handle.write([7], at: 299_999)
        #expect(try handle.read(count: 1, at: 299_999) == [7])
        #expect(try handle.read(count: 100_000, at: 0) == original)
        #expect(throws: StoreError.self) { try store.expandVolume(id: volume.id, to: 200_000) }
        #expect(try store.expandVolume(id: volume.id, to: 300_000).size == 300_000)
        try handle.close()
        #expect(try store.contents(ofVolume: volume.id).count == 300_000)
    }

    @Test func expandingAnOpenVolumeAcrossIndexChunks() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 10 << 20, clusterSize: 4096)
        let handle = try store.open(volumeID: volume.id)
        let head = pattern(seed: 50, count: 5000)
        try handle.write(head, at: 3)
        _ = try store.expandVolume(id: volume.id, to: 100 << 20)
        let tail = pattern(seed: 51, count: 9000)
        try handle.write(tail, at: (100 << 20) - 9000)
        #expect(try handle.read(count: 5000, at: 3) == head)
        #expect(try handle.read(count: 9000, at: (100 << 20) - 9000) == tail)
        #expect(try handle.read(count: 4096, at: 50 << 20) == [UInt8](repeating: 0, count: 4096))
        try handle.close()
        store.close()
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        let again = try reopened.open(volumeID: volume.id)
        #expect(try again.read(count: 9000, at: (100 << 20) - 9000) == tail)
        try again.close()
    }

    @Test func cloneLargerThanItsSnapshotReadsZerosBeyond() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let base = try store.createVolume(name: "base", size: 100_000, clusterSize: 65536)
        let original = pattern(seed: 6, count: 100_000)
        let handle = try store.open(volumeID: base.id)
        try handle.write(original, at: 0)
        try handle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        #expect(throws: StoreError.self) {
            try store.createVolume(name: "small", size: 99_999, source: .snapshot(id: snapshot.id))
        }
        let clone = try store.createVolume(name: "big", size: 300_000, source: .snapshot(id: snapshot.id))
        #expect(try store.contents(ofVolume: clone.id) == original + [UInt8](repeating: 0, count: 200_000))
    }

    @Test func handlesOfOneVolumeShareWrites() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let first = try store.open(volumeID: volume.id)
        let second = try store.open(volumeID: volume.id)
        try first.write([1, 2, 3], at: 500)
        #expect(try second.read(count: 3, at: 500) == [1, 2, 3])
        try first.close()
        #expect(try second.read(count: 3, at: 500) == [1, 2, 3])
        #expect(throws: StoreError.self) { try first.read(count: 1, at: 0) }
        try second.close()
    }
}
