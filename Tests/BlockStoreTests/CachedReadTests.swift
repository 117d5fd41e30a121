import Foundation
import Glibc
import StrataTestSupport
import Testing
@testable import BlockStore

/// `VolumeHandle.readIfCached`, which the block wire's event loop uses to answer a read without a
/// thread hand-off: it answers only from the page cache, says so when it cannot (the caller then
/// reads the blocking way), and what it answers is exactly what `read` answers, through a clone's
/// chain too.
@Suite(.blockingTolerant) struct CachedReadTests {
    @Test func aReadOfEvictedDataIsRefusedThenAnsweredOnceTheCacheHoldsIt() throws {
        let directory = try TemporaryDirectory(.disk)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        defer { store.close() }
        let base = try store.createVolume(name: "base", size: 8 << 20, clusterSize: 65536)
        let baseHandle = try store.open(volumeID: base.id)
        let golden = pattern(seed: 21, count: 1 << 20)
        try baseHandle.write(golden, at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "golden", of: base.id)
        let clone = try store.createVolume(name: "clone", size: 8 << 20, source: .snapshot(id: snapshot.id))
        let handle = try store.open(volumeID: clone.id)
        defer { try? handle.close() }
        let own = pattern(seed: 22, count: 4096)
        try handle.write(own, at: 65536 + 8192)  // a mixed cluster: one subcluster the clone's, the rest inherited
        try handle.flush()
        try Self.evictPageCache(under: directory.path)

        var buffer = [UInt8](repeating: 0, count: 3 * 65536)
        let cachedAtFirst = try buffer.withUnsafeMutableBytes { try handle.readIfCached(into: $0, at: 0) }
        #expect(!cachedAtFirst, "nothing of the chain is in the page cache: the read must wait for the disk")

        var expected = golden[0..<(3 * 65536)].map { $0 }
        expected.replaceSubrange((65536 + 8192)..<(65536 + 8192 + 4096), with: own)
        let blocking = try handle.read(count: buffer.count, at: 0)
        #expect(blocking == expected)
        let cachedNow = try buffer.withUnsafeMutableBytes { try handle.readIfCached(into: $0, at: 0) }
        #expect(cachedNow, "the blocking read brought the pages in")
        #expect(buffer == expected, "the cached answer is the blocking one, through the clone's chain")

        var unwritten = [UInt8](repeating: 0xFF, count: 65536)
        let zeros = try unwritten.withUnsafeMutableBytes { try handle.readIfCached(into: $0, at: 4 << 20) }
        #expect(zeros && unwritten == [UInt8](repeating: 0, count: 65536), "unwritten clusters read as zeros without any I/O")

        #expect(throws: StoreError.self) {
            try buffer.withUnsafeMutableBytes { _ = try handle.readIfCached(into: $0, at: (8 << 20) - 4096) }
        }
    }

    /// Drops every file's pages under `path` (flushed first, so that none is dirty).
    static func evictPageCache(under path: String) throws {
        let files = FileManager.default.enumerator(atPath: path)
        while let name = files?.nextObject() as? String {
            let full = "\(path)/\(name)"
            var info = stat()
            guard stat(full, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let descriptor = open(full, O_RDONLY)
            guard descriptor >= 0 else { continue }
            fdatasync(descriptor)
            posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
            close(descriptor)
        }
    }
}
