import CFuse3
import Foundation
import Glibc
import StrataTestSupport
import Testing

@testable import NodeHost

extension DeviceTests {
    /// The FUSE file itself, without a loop device on top.
    @Suite(.blockingTolerant) struct ExportedFiles {
        static let size: UInt64 = 8 << 20

        @Test("exports appear as root-only regular files as large as their backend")
        func listingAndAttributes() throws {
            try NodeFixture.run { fixture in
                let small = MemoryBackend(size: 1 << 20), large = MemoryBackend(size: Self.size)
                let first = try fixture.exporter.add(name: "vol-b", backend: large)
                let second = try fixture.exporter.add(name: "vol-a", backend: small)
                #expect(first == fixture.path("exports/vol-b"))
                let listed = try FileManager.default.contentsOfDirectory(atPath: fixture.exporter.mountPoint).sorted()
                #expect(listed == ["vol-a", "vol-b"])
                let status = try Syscall.status(of: second)
                #expect(status.st_size == 1 << 20)
                #expect(status.st_mode == S_IFREG | 0o600)
                #expect(try Syscall.status(of: first).st_size == off_t(Self.size))
                #expect(Syscall.directoryEntries(fixture.exporter.mountPoint).count == 2)
                try fixture.exporter.remove(name: "vol-a")
                try fixture.exporter.remove(name: "vol-b")
                #expect(try Syscall.statusIfPresent(of: first) == nil)
                #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.exporter.mountPoint).isEmpty)
            }
        }

        @Test("reads and writes on the file are the backend's bytes; the file cannot grow or shrink")
        func fileIO() throws {
            try NodeFixture.run { fixture in
                let backend = MemoryBackend(size: Self.size)
                let file = try fixture.exporter.add(name: "io", backend: backend)
                let data = pattern(seed: 11, count: 300_000)
                try DeviceIO.write(data, to: file, at: 12_345, direct: false)
                #expect(backend.bytes(at: 12_345, count: data.count) == data)
                #expect(try DeviceIO.read(file, at: 12_345, count: data.count, direct: true) == data)
                // Short read at the end, nothing past it.
                #expect(try DeviceIO.read(file, at: Self.size - 100, count: 4096, direct: false).count == 100)
                #expect(try DeviceIO.read(file, at: Self.size, count: 4096, direct: false).isEmpty)

                // Closed at the end of this block, before the export is removed (an open file
                // keeps it busy); closed once: a second close(2) of the number can close a
                // descriptor another thread opened meanwhile (it once closed an NIO socket).
                do {
                    let fd = try DeviceIO.open(file, write: true, direct: false)
                    defer { close(fd) }
                    var byte: UInt8 = 1
                    #expect(pwrite(fd, &byte, 1, off_t(Self.size)) == -1 && errno == ENOSPC, "writing past the end must fail")
                    #expect(ftruncate(fd, off_t(Self.size / 2)) == -1 && errno == EPERM, "shrinking must be refused")
                    #expect(ftruncate(fd, off_t(Self.size * 2)) == -1 && errno == EPERM, "growing by truncate must be refused")
                    #expect(ftruncate(fd, off_t(Self.size)) == 0, "a no-op truncate is fine")
                    #expect(fsync(fd) == 0)
                    #expect(backend.flushCount.load(ordering: .relaxed) >= 1)

                    // Punching a hole is a discard; the range reads as zeros.
                    let punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                    #expect(strata_fallocate(fd, punch, 65536, 131072) == 0)
                    #expect(backend.discards.withLock { $0.map(\.offset) } == [65536])
                    #expect(try DeviceIO.read(file, at: 65536, count: 131072, direct: false).allSatisfy { $0 == 0 })
                    // Zeroing writes zeros; extending the file is refused.
                    #expect(strata_fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 200_000, 50_000) == 0)
                    #expect(backend.bytes(at: 200_000, count: 50_000).allSatisfy { $0 == 0 })
                    #expect(strata_fallocate(fd, 0, off_t(Self.size) - 10, 100) == -1 && errno == EFBIG)
                }
                try fixture.exporter.remove(name: "io")
            }
        }

        @Test("large direct transfers arrive as 1 MiB requests")
        func requestSize() throws {
            try NodeFixture.run { fixture in
                let backend = MemoryBackend(size: Self.size)
                let file = try fixture.exporter.add(name: "big", backend: backend)
                let data = pattern(seed: 12, count: 4 << 20)
                try DeviceIO.write(data, to: file, at: 0, direct: true)
                #expect(try DeviceIO.read(file, at: 0, count: 4 << 20, direct: true) == data)
                #expect(backend.largestWrite.load(ordering: .relaxed) == 1 << 20)
                #expect(backend.largestRead.load(ordering: .relaxed) == 1 << 20)
                try fixture.exporter.remove(name: "big")
            }
        }

        @Test("backend errors reach the reader and writer as their errno")
        func backendErrors() throws {
            try NodeFixture.run { fixture in
                let backend = MemoryBackend(size: Self.size)
                let file = try fixture.exporter.add(name: "failing", backend: backend)
                backend.failing.store(EIO, ordering: .relaxed)
                #expect(throws: NodeHostError.self) { try DeviceIO.read(file, at: 0, count: 4096, direct: true) }
                let fd = try DeviceIO.open(file, write: true, direct: false)
                var block = [UInt8](repeating: 7, count: 4096)
                backend.failing.store(ENOSPC, ordering: .relaxed)
                #expect(pwrite(fd, &block, block.count, 0) == -1 && errno == ENOSPC)
                backend.failing.store(EIO, ordering: .relaxed)
                #expect(fsync(fd) == -1 && errno == EIO)
                backend.failing.store(0, ordering: .relaxed)
                #expect(pwrite(fd, &block, block.count, 0) == 4096)
                close(fd)
                try fixture.exporter.remove(name: "failing")
            }
        }

        @Test("add and remove are idempotent; a taken name or an open file is refused")
        func addAndRemove() throws {
            try NodeFixture.run { fixture in
                let backend = MemoryBackend(size: Self.size)
                let path = try fixture.exporter.add(name: "same", backend: backend)
                #expect(try fixture.exporter.add(name: "same", backend: backend) == path)
                #expect { try fixture.exporter.add(name: "same", backend: MemoryBackend(size: 4096)) } throws: {
                    ($0 as? NodeHostError)?.code == .alreadyExists
                }
                let fd = try DeviceIO.open(path, write: false, direct: false)
                #expect { try fixture.exporter.remove(name: "same", releaseWait: 0.1) } throws: {
                    ($0 as? NodeHostError)?.code == .busy
                }
                close(fd)
                try fixture.exporter.remove(name: "same")
                try fixture.exporter.remove(name: "same")
                #expect(fixture.exporter.names.isEmpty)

                // Forced removal leaves an open handle working; the name is gone at once.
                let again = try fixture.exporter.add(name: "same", backend: backend)
                let held = try DeviceIO.open(again, write: false, direct: false)
                try fixture.exporter.remove(name: "same", force: true)
                #expect(try Syscall.statusIfPresent(of: again) == nil)
                var byte: UInt8 = 0
                #expect(pread(held, &byte, 1, 0) == 1)
                close(held)
            }
        }
    }
}
