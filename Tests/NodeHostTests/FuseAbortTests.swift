import Dispatch
import Foundation
import Glibc
import KernelFiles
import StrataTestSupport
import Testing

@testable import NodeHost

extension DeviceTests {
    /// FUSE connection numbers (fusectl's names, the mounts' device numbers) are reused
    /// lowest-first. An exporter's stop must abort its own connection, never the one that has
    /// its number now: here a FUSE mount our mountinfo never lists (detached, kept alive by a
    /// descriptor), as another container's would be.
    @Suite(.blockingTolerant) struct FuseAbort {
        @Test("stop aborts its own connection, not a hidden mount that took its number")
        func stopSparesReusedConnectionNumber() throws {
            // fusectl is mounted where this test can see it, not over the host's own directory.
            let fusectl = "\(NodeFixture.base)/fusectl-\(getpid())"
            try Syscall.makeDirectories(fusectl)
            if !MountTable.isMountPoint(fusectl) {
                try Syscall.mount(source: "fusectl", target: fusectl, fsType: "fusectl", flags: 0, data: nil)
            }
            defer { _ = umount2(fusectl, Int32(MNT_DETACH)); rmdir(fusectl) }
            var options = FuseExporter.Options()
            options.fuseConnectionsDirectory = fusectl
            try NodeFixture.run { fixture in
                let exporter = FuseExporter(mountPoint: fixture.path("gated-exports"), options: options)
                try fixture.start(exporter)
                let mount = try #require(try MountTable.mounts(at: exporter.mountPoint).last)
                let number = (mount.major << 20) | mount.minor
                let backend = GatedBackend()
                let file = try exporter.add(name: "gated", backend: backend)

                // One session worker stays busy in the backend, so the session outlives its connection.
                let reader = Thread {
                    let fd = open(file, O_RDONLY)
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    _ = read(fd, &buffer, buffer.count)
                    close(fd)
                }
                reader.start()
                #expect(backend.entered.wait(timeout: .now() + 5) == .success, "the read never reached the backend")

                // Someone else ends the connection and takes the mount away (a forced, lazy unmount).
                _ = umount2(exporter.mountPoint, Int32(MNT_FORCE))
                _ = umount2(exporter.mountPoint, Int32(MNT_DETACH))

                // Another FUSE mount our mountinfo does not show; if our number is free, it gets it.
                let source = fixture.path("other-source")
                let target = fixture.path("other-mount")
                try Syscall.makeDirectories(source)
                try Syscall.makeDirectories(target)
                var other = try HiddenFuseMount(source: source, target: target)
                for _ in 0..<10 where other.connectionNumber != number && access("\(fusectl)/\(number)", F_OK) != 0 {
                    other.stop()
                    other = try HiddenFuseMount(source: source, target: target)
                }
                defer { other.stop() }
                #expect(other.connectionNumber != nil, "bindfs never mounted \(target)")

                // Our stop, with the worker still busy: it must abort our connection only.
                let stopped = DispatchSemaphore(value: 0)
                let stopper = Thread { exporter.stop(); stopped.signal() }
                stopper.start()
                usleep(1_000_000)
                backend.gate.signal()
                #expect(stopped.wait(timeout: .now() + 15) == .success, "stop did not return")

                #expect(other.isServing, "the hidden FUSE mount (connection \(other.connectionNumber), ours was \(number)) was aborted")
            }
        }
    }
}

/// A backend whose reads wait for the test: keeps a session worker busy on demand.
final class GatedBackend: BlockBackend, @unchecked Sendable {
    let size: UInt64 = 1 << 20
    let entered = DispatchSemaphore(value: 0)
    let gate = DispatchSemaphore(value: 0)

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        entered.signal()
        gate.wait()
        gate.signal()
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {}
    func discard(at offset: UInt64, length: UInt64) throws {}
    func flush() throws {}
}

/// A live FUSE mount that no mountinfo lists: bindfs (in the foreground) mounts it here, a
/// descriptor pins its filesystem, and the mount is detached at once, as another container's
/// mount is invisible to us. Not a mount namespace of its own (`unshare --mount`): a new mount
/// namespace starts with a copy of every mount of ours, other tests' ext4 staging mounts
/// included, and holds their filesystems alive after those tests unmount them; their last
/// journal writes then reached exports already stopped (a whole run's PluginRestartTests found
/// its filesystem with an unreplayed journal, "Aborting journal" in dmesg).
struct HiddenFuseMount {
    let process = Process()
    let target: String
    /// Its connection number (nil when bindfs never mounted).
    let connectionNumber: UInt32?
    private let pin: Int32

    init(source: String, target: String) throws {
        self.target = target
        process.executableURL = URL(fileURLWithPath: "/usr/bin/bindfs")
        process.arguments = ["-f", source, target]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var number: UInt32?
        for _ in 0..<100 {
            if let mount = try? MountTable.mounts(at: target).last, mount.fsType.hasPrefix("fuse") {
                number = (mount.major << 20) | mount.minor
                break
            }
            usleep(50_000)
        }
        connectionNumber = number
        pin = number == nil ? -1 : open(target, Syscall.pathOnly | O_DIRECTORY)
        if number != nil { _ = umount2(target, Int32(MNT_DETACH)) }
    }

    /// Whether its server still runs: an aborted connection ends bindfs's loop, and bindfs.
    var isServing: Bool {
        usleep(500_000)
        return process.isRunning
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        if pin >= 0 { close(pin) }
        _ = umount2(target, Int32(MNT_DETACH))
    }
}
