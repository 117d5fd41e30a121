import Dispatch
import Foundation
import Glibc
import StrataTestSupport
import Synchronization
import Testing

@testable import NodeHost

extension DeviceTests {
    /// Idempotency of attach and detach, device discovery, and what survives an exporter's end.
    @Suite(.blockingTolerant) struct Lifecycle {
        static let size: UInt64 = 320 << 20

        @Test("attach and detach are idempotent and attachments are found again by file")
        func attachDetachIdempotent() throws {
            try NodeFixture.run { fixture in
                let attacher = fixture.attacher
                let (_, file, device) = try fixture.exportAndAttach("idem", size: 16 << 20)
                #expect(try attacher.attach(file: file, readOnly: false, directIO: true) == device)
                #expect(try attacher.attach(file: file, readOnly: false, directIO: false) == device)
                #expect(try attacher.device(backingFile: file) == device)
                #expect(try attacher.device(backingFile: file, readOnly: true) == nil)
                let attachment = try #require(try attacher.attachments(backingFile: file).first)
                #expect(attachment.device == device && !attachment.readOnly && attachment.directIO)
                #expect(attachment.backingInode == UInt64(try Syscall.status(of: file).st_ino))
                let number = try #require(LoopAttacher.number(of: device))
                #expect(try Syscall.readText("/sys/block/loop\(number)/queue/read_ahead_kb") == "1024\n")
                #expect(try attacher.refreshSize(device: device) == 16 << 20)

                #expect(try fixture.detachFreeing(device))
                // Detaching again is idempotent, and acts only on what was found: other tests
                // (and drivers they run) attach devices meanwhile, and the number just freed is
                // the next one handed out. A second detach by number alone cut a restarted
                // driver's fresh device in a whole run (its reads failed with EIO).
                #expect(try attacher.detach(attachment))
                #expect(try attacher.device(backingFile: file) == nil)
                #expect(try attacher.freeDeviceCount() >= 1)

                #expect(try attacher.detach(device: "/dev/loop987654"))
                #expect { try attacher.detach(device: "/dev/vda") } throws: { ($0 as? NodeHostError)?.code == .invalidArgument }
                try fixture.exporter.remove(name: "idem")
            }
        }

        @Test("concurrent attaches get distinct devices, each on its own file")
        func concurrentAttaches() throws {
            try NodeFixture.run { fixture in
                let names = (0..<4).map { "concurrent-\($0)" }
                var files: [String] = []
                for name in names { files.append(try fixture.exporter.add(name: name, backend: MemoryBackend(size: 8 << 20))) }
                let attacher = fixture.attacher, sharedFiles = files
                let outcomes = OwnThreads.run(files.count) { index in
                    Result { try attacher.attach(file: sharedFiles[index], readOnly: false, directIO: true) }
                        .mapError { $0 as? NodeHostError ?? NodeHostError(.systemCall, "\($0)") }
                }
                var attached: [String] = []
                for index in files.indices {
                    let device = try outcomes[index].get()
                    #expect(try attacher.device(backingFile: files[index]) == device)
                    attached.append(device)
                }
                #expect(Set(attached).count == files.count)
                for (index, device) in attached.enumerated() { try fixture.unstage(name: names[index], device: device) }
            }
        }

        @Test("missing device nodes are created, as in a container without /dev/loop*")
        func createsDeviceNodes() throws {
            try NodeFixture.run { fixture in
                let devices = fixture.path("dev")
                try Syscall.makeDirectories(devices)
                let attacher = LoopAttacher(deviceDirectory: devices)
                let backend = MemoryBackend(size: 8 << 20)
                let file = try fixture.exporter.add(name: "nodes", backend: backend)
                let device = try attacher.attach(file: file, readOnly: false, directIO: true)
                #expect(device.hasPrefix(devices + "/loop"))
                #expect(try Syscall.status(of: "\(devices)/loop-control").st_mode & S_IFMT == S_IFCHR)
                let data = pattern(seed: 41, count: 65536)
                try DeviceIO.write(data, to: device, at: 0, direct: true)
                #expect(backend.bytes(at: 0, count: data.count) == data)
                #expect(try fixture.detachFreeing(device))
                try fixture.exporter.remove(name: "nodes")
            }
        }

        @Test("an exporter starts once, stops idempotently, and leaves its mount point reusable")
        func startStop() throws {
            try NodeFixture.run { fixture in
                let exporter = fixture.exporter
                #expect(exporter.isServing)
                #expect { try exporter.start() } throws: { ($0 as? NodeHostError)?.code == .alreadyExists }
                exporter.stop()
                exporter.stop()
                #expect(!exporter.isServing)
                #expect(try !fixture.mounter.isMountPoint(exporter.mountPoint))
                #expect { try exporter.add(name: "late", backend: MemoryBackend(size: 4096)) } throws: {
                    ($0 as? NodeHostError)?.code == .notRunning
                }

                #expect { try FuseExporter(mountPoint: "relative/exports").start() } throws: {
                    ($0 as? NodeHostError)?.code == .invalidArgument
                }
                let next = FuseExporter(mountPoint: exporter.mountPoint + "/")
                try fixture.start(next)
                #expect(next.replacedStaleMounts.isEmpty)
                let backend = MemoryBackend(size: 1 << 20)
                let file = try next.add(name: "again", backend: backend)
                try DeviceIO.write([1, 2, 3], to: file, at: 10, direct: false)
                #expect(backend.bytes(at: 10, count: 3) == [1, 2, 3])
                try next.remove(name: "again")
            }
        }

        @Test("stopping with a device attached aborts the connection; the device fails I/O and still detaches")
        func stopWhileAttached() throws {
            try NodeFixture.run { fixture in
                let (_, _, device) = try fixture.exportAndAttach("held", size: 16 << 20)
                try DeviceIO.write(pattern(seed: 51, count: 4096), to: device, at: 0, direct: true)
                fixture.exporter.stop()
                #expect(!fixture.exporter.isServing)
                #expect(try !fixture.mounter.isMountPoint(fixture.exporter.mountPoint), "the mount is detached lazily")
                #expect(throws: NodeHostError.self) { try DeviceIO.read(device, at: 0, count: 4096, direct: true) }
                #expect(try fixture.detachFreeing(device))
            }
        }

        @Test("after a crash, a new exporter replaces the dead mount and a fresh attachment recovers the data")
        func crashRecovery() throws {
            try NodeFixture.run { fixture in
                let (mounter, attacher, first) = (fixture.mounter, fixture.attacher, fixture.exporter)
                let (backend, file, device) = try fixture.exportAndAttach("vol", size: Self.size)
                try mounter.format(device: device, fsType: .ext4, options: [])
                let staging = fixture.path("staging/vol")
                try mounter.mount(source: device, target: staging, fsType: "ext4", options: [], readOnly: false)
                let data = pattern(seed: 61, count: 2 << 20)
                try DeviceIO.writeFile("\(staging)/kept.bin", data)
                let deadFilesystem = try #require(first.filesystemDevice)

                // The crash: the kernel aborts the connection, as when the process holding
                // /dev/fuse dies. The mount stays behind, dead (busy: the loop device holds a file).
                #expect(umount2(first.mountPoint, Int32(MNT_FORCE)) == -1 && errno == EBUSY)
                #expect(waitUntil { !first.isServing }, "the session loop ends when the connection is aborted")
                #expect(throws: NodeHostError.self) { try DeviceIO.read(device, at: 0, count: 4096, direct: true) }
                #expect(throws: NodeHostError.self) { try Syscall.status(of: file) }

                // A new process: a new exporter at the same place replaces the dead mount.
                let second = FuseExporter(mountPoint: first.mountPoint)
                try fixture.start(second)
                #expect(second.replacedStaleMounts.map(\.deviceNumber) == [deadFilesystem])
                #expect(try second.add(name: "vol", backend: backend) == file)
                #expect(try attacher.device(backingFile: file) == nil, "the old device serves the dead file, not this one")
                let stale = try attacher.attachments(onFilesystem: deadFilesystem)
                #expect(stale.map(\.device) == [device])
                #expect(stale.first?.backingFile == "/vol", "the kernel names the file relative to the detached mount")

                // Recovery: unmount what sits on the dead device, detach it, attach afresh, remount.
                try mounter.unmount(target: staging)
                #expect(try fixture.detachFreeing(device))
                let fresh = try attacher.attach(file: file, readOnly: false, directIO: true)
                try mounter.mount(source: fresh, target: staging, fsType: "ext4", options: [], readOnly: false)
                #expect(try DeviceIO.readFile("\(staging)/kept.bin") == data)

                // The first exporter's stop must not touch the second one's mount.
                first.stop()
                #expect(second.isServing)
                #expect(try mounter.mountInfo(for: second.mountPoint)?.deviceNumber == second.filesystemDevice)
                try mounter.unmount(target: staging)
                #expect(try fixture.detachFreeing(fresh))
                try second.remove(name: "vol")
            }
        }
    }
}

/// Polls `condition` for up to `seconds`.
func waitUntil(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    for _ in 0..<Int(seconds * 100) {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
