import Foundation
import StrataTestSupport
import Synchronization
import Testing
@testable import BlockStore

/// Many threads at once: copy-ups of one cluster do not lose each other's bytes, and a snapshot
/// taken while writes run holds each write whole or not at all, in order.
@Suite(.blockingTolerant) struct ConcurrencyTests {
    @Test func partialWritesIntoOneInheritedClusterFromManyThreads() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let clusterSize = 65536
        let size = UInt64(clusterSize * 8)
        let base = try store.createVolume(name: "base", size: size, clusterSize: UInt32(clusterSize))
        let original = pattern(seed: 10, count: Int(size))
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(original, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "c", size: size, source: .snapshot(id: snapshot.id))
        let handle = try store.open(volumeID: clone.id)
        let threads = 8
        let piece = 512
        // Thread t writes piece t of every 4 KiB block of every cluster: each cluster is copied
        // up by whichever thread comes first, and nobody's bytes may be lost.
        try concurrently(threads) { thread in
            var offset = thread * piece
            while offset < Int(size) {
                try handle.write(pattern(seed: UInt64(offset), count: piece), at: UInt64(offset))
                let back = try handle.read(count: piece, at: UInt64(offset))
                guard back == pattern(seed: UInt64(offset), count: piece) else {
                    throw StoreError(.corrupt, "thread \(thread) read back other bytes at \(offset)")
                }
                offset += threads * piece * 2
            }
        }
        var expected = original
        for thread in 0..<threads {
            var offset = thread * piece
            while offset < Int(size) {
                expected.replaceSubrange(offset..<offset + piece, with: pattern(seed: UInt64(offset), count: piece))
                offset += threads * piece * 2
            }
        }
        #expect(try handle.readAll() == expected)
        try handle.close()
        #expect(try store.contents(ofSnapshot: snapshot.id) == original)
    }

    @Test func snapshotsTakenDuringWritesAreCrashConsistent() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let threads = 4
        let blocksPerThread = 48
        let block = 6000  // unaligned, crosses 4 KiB cluster boundaries
        let size = UInt64(threads * blocksPerThread * block)
        let volume = try store.createVolume(name: "v", size: size, clusterSize: 4096)
        let handle = try store.open(volumeID: volume.id)
        let finished = Atomic<Int>(0)
        let snapshotIDs = Mutex<[String]>([])
        // The writers wait half-way for the first snapshot, so at least one is taken while they
        // write: on a busy machine they could otherwise finish before this thread takes any.
        let firstSnapshotTaken = Atomic<Bool>(false)
        let writer = Thread {
            try? concurrently(threads) { thread in
                for index in 0..<blocksPerThread {
                    if index == blocksPerThread / 2 {
                        while !firstSnapshotTaken.load(ordering: .acquiring) { usleep(200) }
                    }
                    let offset = (thread * blocksPerThread + index) * block
                    try handle.write(pattern(seed: UInt64(offset + 1), count: block), at: UInt64(offset))
                }
            }
            finished.store(1, ordering: .releasing)
        }
        writer.start()
        var number = 0
        while finished.load(ordering: .acquiring) == 0 {
            let snapshot = try store.createSnapshot(name: "s\(number)", of: volume.id)
            snapshotIDs.withLock { $0.append(snapshot.id) }
            firstSnapshotTaken.store(true, ordering: .releasing)
            number += 1
        }
        #expect(number > 0)
        for id in snapshotIDs.withLock({ $0 }) {
            let contents = try store.contents(ofSnapshot: id)
            for thread in 0..<threads {
                var seenMissing = false
                for index in 0..<blocksPerThread {
                    let offset = (thread * blocksPerThread + index) * block
                    let bytes = Array(contents[offset..<offset + block])
                    if bytes == pattern(seed: UInt64(offset + 1), count: block) {
                        #expect(!seenMissing, "a later write of thread \(thread) is in the snapshot without an earlier one")
                    } else {
                        #expect(bytes == [UInt8](repeating: 0, count: block), "a write is half in snapshot \(id)")
                        seenMissing = true
                    }
                }
            }
        }
        try handle.close()
        #expect(try store.checkConsistency().isClean)
    }

    @Test func readersAndWritersOnManyClonesAtOnce() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let size: UInt64 = 1 << 20
        let base = try store.createVolume(name: "base", size: size, clusterSize: 16384)
        let original = pattern(seed: 11, count: Int(size))
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(original, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clones = try (0..<4).map { try store.createVolume(name: "c\($0)", size: size, source: .snapshot(id: snapshot.id)) }
        let handles = try clones.map { try store.open(volumeID: $0.id) }
        try concurrently(8) { worker in
            let handle = handles[worker % handles.count]
            var generator = SeededGenerator(seed: UInt64(worker))
            for _ in 0..<200 {
                let offset = Int.random(in: 0..<Int(size) - 8192, using: &generator)
                if worker < 4 {
                    // Writers stamp their clone with its own number, a byte at a time apart.
                    try handle.write([UInt8](repeating: UInt8(worker + 1), count: 100), at: UInt64(offset))
                } else {
                    // Readers check every byte is either the original or the clone's own stamp.
                    let bytes = try handle.read(count: 8192, at: UInt64(offset))
                    for (index, byte) in bytes.enumerated() where byte != original[offset + index] && byte != UInt8(worker - 3) {
                        throw StoreError(.corrupt, "clone \(worker % 4) shows \(byte) at \(offset + index)")
                    }
                }
            }
        }
        for handle in handles { try handle.close() }
        #expect(try store.contents(ofSnapshot: snapshot.id) == original)
    }
}
