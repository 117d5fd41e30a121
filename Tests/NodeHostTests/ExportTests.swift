import Glibc
import StrataTestSupport
import Testing

@testable import NodeHost

/// Every test that creates mounts or loop devices lives under this one serialized suite:
/// they share the machine's loop devices and mount table.
@Suite(.serialized, .enabled(if: NodeEnvironment.available, NodeEnvironment.skipReason), .blockingTolerant)
struct DeviceTests {}

extension DeviceTests {
    @Suite(.blockingTolerant) struct Export {
        static let mebibyte: UInt64 = 1 << 20

        @Test("raw bytes through the loop device reach the backend and come back", arguments: [true, false])
        func rawBytesRoundTrip(directIOLoop: Bool) throws {
            try NodeFixture.run { fixture in
                let (backend, _, device) = try fixture.exportAndAttach("raw", size: 64 * Self.mebibyte, directIO: directIOLoop)
                #expect(try fixture.mounter.blockDeviceSize(device: device) == 64 * Self.mebibyte)

                // O_DIRECT: straight to the backend.
                let direct = pattern(seed: 1, count: 3 * Int(Self.mebibyte))
                try DeviceIO.write(direct, to: device, at: 5 * Self.mebibyte, direct: true)
                #expect(backend.bytes(at: 5 * Self.mebibyte, count: direct.count) == direct)
                #expect(try DeviceIO.read(device, at: 5 * Self.mebibyte, count: direct.count, direct: true) == direct)

                // Buffered, unaligned in the file: reaches the backend once synced.
                let buffered = pattern(seed: 2, count: 1_000_000)
                let flushesBefore = backend.flushCount.load(ordering: .relaxed)
                try DeviceIO.write(buffered, to: device, at: 20 * Self.mebibyte + 512, direct: false, sync: true)
                #expect(backend.bytes(at: 20 * Self.mebibyte + 512, count: buffered.count) == buffered)
                #expect(try DeviceIO.read(device, at: 20 * Self.mebibyte + 512, count: buffered.count, direct: false) == buffered)
                #expect(backend.flushCount.load(ordering: .relaxed) > flushesBefore, "fsync on the device must reach backend.flush")

                // Written behind the kernel's back, read through O_DIRECT: no stale cache in between.
                let behind = pattern(seed: 3, count: 65536)
                backend.store(behind, at: 40 * Self.mebibyte)
                #expect(try DeviceIO.read(device, at: 40 * Self.mebibyte, count: behind.count, direct: true) == behind)

                // The last block, and nothing past the end.
                let tail = pattern(seed: 4, count: 4096)
                try DeviceIO.write(tail, to: device, at: 64 * Self.mebibyte - 4096, direct: true)
                #expect(backend.bytes(at: 64 * Self.mebibyte - 4096, count: 4096) == tail)
                #expect(try DeviceIO.read(device, at: 64 * Self.mebibyte, count: 4096, direct: true).isEmpty)

                try fixture.unstage(name: "raw", device: device)
            }
        }

        @Test("discard on the device becomes backend.discard and reads back as zeros")
        func discardReachesBackend() throws {
            try NodeFixture.run { fixture in
                let (backend, _, device) = try fixture.exportAndAttach("discard", size: 32 * Self.mebibyte)
                let data = pattern(seed: 5, count: 4 * Int(Self.mebibyte))
                try DeviceIO.write(data, to: device, at: 0, direct: true)
                try Command.check("blkdiscard", ["-o", "\(Self.mebibyte)", "-l", "\(2 * Self.mebibyte)", device])
                let discarded = backend.discards.withLock { $0.reduce(0) { $0 + $1.length } }
                #expect(discarded == 2 * Self.mebibyte)
                let after = try DeviceIO.read(device, at: 0, count: data.count, direct: true)
                #expect(after[0..<Int(Self.mebibyte)] == data[0..<Int(Self.mebibyte)])
                #expect(after[Int(Self.mebibyte)..<Int(3 * Self.mebibyte)].allSatisfy { $0 == 0 })
                #expect(after[Int(3 * Self.mebibyte)...] == data[Int(3 * Self.mebibyte)...])
                try fixture.unstage(name: "discard", device: device)
            }
        }
    }
}
