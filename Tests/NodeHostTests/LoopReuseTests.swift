import Glibc
import StrataTestSupport
import Testing

@testable import NodeHost

extension DeviceTests {
    /// Loop numbers are handed out lowest-first, so the number of a device just freed is the one
    /// the next attach gets. Acting on a number found earlier must not cut whoever holds it now.
    @Suite(.blockingTolerant) struct LoopReuse {
        @Test("a stale second detach of one volume's loop leaves the volume that reused its number working")
        func staleDetachSparesReusedNumber() throws {
            try NodeFixture.run { fixture in
                let attacher = fixture.attacher
                let (_, fileA, _) = try fixture.exportAndAttach("reuse-a", size: 8 << 20)
                let fileB = try fixture.exporter.add(name: "reuse-b", backend: MemoryBackend(size: 8 << 20))
                var stale = try #require(try attacher.attachments(backingFile: fileA).first)
                var deviceB: String?
                // Other suites attach devices meanwhile: repeat until B gets A's freed number.
                for _ in 0..<20 {
                    #expect(try fixture.detachFreeing(stale))
                    let attached = try attacher.attach(file: fileB, readOnly: false, directIO: true)
                    if attached == stale.device { deviceB = attached; break }
                    #expect(try fixture.detachFreeing(attached))
                    _ = try attacher.attach(file: fileA, readOnly: false, directIO: true)
                    stale = try #require(try attacher.attachments(backingFile: fileA).first)
                }
                let reused = try #require(deviceB, "volume B never got volume A's freed loop number")

                // The retried teardown of A acts on what it found before: B's device now.
                #expect(try attacher.detach(stale))

                #expect(try attacher.device(backingFile: fileB) == reused, "B's loop device was cut")
                let bytes = pattern(seed: 7, count: 1 << 20)
                try DeviceIO.write(bytes, to: reused, at: 0, direct: true, sync: true)
                #expect(try DeviceIO.read(reused, at: 0, count: bytes.count, direct: true) == bytes)

                let attachmentB = try #require(try attacher.attachments(backingFile: fileB).first)
                #expect(try fixture.detachFreeing(attachmentB))
                try fixture.exporter.remove(name: "reuse-a")
                try fixture.exporter.remove(name: "reuse-b")
            }
        }
    }
}
