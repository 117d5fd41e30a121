import Foundation
import Glibc
import StrataTestSupport
import Testing
@testable import BlockStore

/// A head that cannot be made durable (the filesystem is full) fails the snapshot, flatten or
/// close that needed it, and leaves the volume usable once there is room again.
@Suite(.blockingTolerant) struct FullFilesystemTests {
    @Test("a snapshot that finds the filesystem full fails with noSpace, and the next one works")
    func snapshotOnFullFilesystem() throws {
        try Self.withStoreOnSmallFilesystem { store, mountPoint in
            // 4 KiB clusters: the map of 64 MiB spans many pages, each allocated on its first flush.
            let volume = try store.createVolume(name: "v", size: 64 << 20, clusterSize: 4096)
            let handle = try store.open(volumeID: volume.id)
            let data = pattern(seed: 3, count: 4 << 20)
            // Small writes all over the volume: many map pages to write at the next snapshot.
            for offset in stride(from: 0, to: 64 << 20, by: 256 << 10) {
                try handle.write(Array(data[0..<4096]), at: UInt64(offset))
            }
            // Fill the filesystem, then give back a little room at a time: with a little, the new
            // head's files fit but the map pages do not, and the snapshot fails while the volume is
            // held still for it (the path that used to break the volume's lock).
            let fd = Self.fill(mountPoint)
            defer { close(fd) }
            var fillerSize = lseek(fd, 0, SEEK_END)
            var failures = 0
            var snapshotted = false
            while !snapshotted, fillerSize > 0 {
                do {
                    _ = try store.createSnapshot(name: "tight", of: volume.id)
                    snapshotted = true
                } catch let error as StoreError where error.code == .noSpace {
                    failures += 1
                    fillerSize -= 4096
                    #expect(ftruncate(fd, fillerSize) == 0)
                }
            }
            #expect(failures > 0, "the filesystem was never full enough to fail a snapshot")
            #expect(snapshotted)
            #expect(ftruncate(fd, 0) == 0)
            // Before: the failed snapshot released the volume's lock twice, and this one waited forever.
            let snapshot = try store.createSnapshot(name: "room-again", of: volume.id)
            #expect(snapshot.sourceVolumeID == volume.id)
            try handle.write(Array(data[(1 << 20)..<(2 << 20)]), at: 0)
            #expect(try handle.read(count: 4096, at: 16 << 20) == Array(data[0..<4096]))
            #expect(try handle.read(count: 1 << 20, at: 0) == Array(data[(1 << 20)..<(2 << 20)]))
            try handle.close()
            #expect(try store.checkConsistency().isClean)
        }
    }

    @Test("a close that finds the filesystem full leaves nothing behind once the volume is opened again")
    func closeOnFullFilesystem() throws {
        try Self.withStoreOnSmallFilesystem { store, mountPoint in
            let volume = try store.createVolume(name: "v", size: 64 << 20, clusterSize: 4096)
            let handle = try store.open(volumeID: volume.id)
            let data = pattern(seed: 5, count: 4096)
            // Unflushed writes all over the volume: their map pages are written only at the close.
            for offset in stride(from: 0, to: 64 << 20, by: 256 << 10) {
                try handle.write(data, at: UInt64(offset))
            }
            let fd = Self.fill(mountPoint)
            defer { close(fd) }
            #expect(throws: StoreError.self) { try handle.close() }
            #expect(ftruncate(fd, 0) == 0)

            // The writes no flush acknowledged are gone, and so are the blocks they held.
            let reopened = try store.open(volumeID: volume.id)
            #expect(try reopened.read(count: 4096, at: 0) == [UInt8](repeating: 0, count: 4096))
            #expect(try store.volume(id: volume.id).allocatedBytes == 0)
            #expect(Self.dataBlocks(in: mountPoint + "/store/layers") == 0)
            try reopened.write(data, at: 8192)
            try reopened.close()
            #expect(try store.volume(id: volume.id).allocatedBytes == 4096)
            #expect(try store.checkConsistency().isClean)
        }
    }

    /// Runs `body` on a store (no space reserve) in a 24 MiB tmpfs of its own, so that the test
    /// can fill the filesystem; skipped without root (mounting needs it).
    static func withStoreOnSmallFilesystem(_ body: (BlockStore, _ mountPoint: String) throws -> Void) throws {
        guard getuid() == 0 else { return }
        let directory = try TemporaryDirectory(.disk, label: "strata-full")
        let mountPoint = directory.path + "/fs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=24m") == 0 else {
            Issue.record("cannot mount a tmpfs: \(String(cString: strerror(errno)))")
            return
        }
        defer { umount2(mountPoint, Int32(MNT_DETACH)) }
        var options = testOptions()
        options.spaceReserveBytes = 0
        let store = try BlockStore(directory: mountPoint + "/store", options: options)
        defer { store.close() }
        try body(store, mountPoint)
    }

    /// Fills the filesystem at `mountPoint` with one file and returns its descriptor (truncate it
    /// to give room back).
    static func fill(_ mountPoint: String) -> Int32 {
        let fd = open(mountPoint + "/filler", O_RDWR | O_CREAT, 0o600)
        let block = [UInt8](repeating: 1, count: 4096)
        while write(fd, block, block.count) > 0 {}
        return fd
    }

    /// Bytes the layer data files under `path` hold on disk.
    static func dataBlocks(in path: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(".data") }.reduce(0) { total, name in
            var info = stat()
            return stat(path + "/" + name, &info) == 0 ? total + Int(info.st_blocks) * 512 : total
        }
    }
}
