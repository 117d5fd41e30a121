import Foundation
import Glibc
import KernelFiles
import StrataTestSupport
import Testing

@testable import NodeHost

extension DeviceTests {
    @Suite(.blockingTolerant) struct Binds {
        static let size: UInt64 = 320 << 20

        @Test("a staged filesystem bound read-write and read-only to two targets")
        func filesystemBinds() throws {
            try NodeFixture.run { fixture in
                let mounter = fixture.mounter
                let (_, _, device) = try fixture.exportAndAttach("bind", size: Self.size)
                try mounter.format(device: device, fsType: .ext4, options: [])
                let staging = fixture.path("staging/bind")
                try mounter.mount(source: device, target: staging, fsType: "ext4", options: [], readOnly: false)

                let writable = fixture.path("pods/a/volumes/bind")
                try mounter.bindMount(source: staging, target: writable, readOnly: false)
                try mounter.bindMount(source: staging, target: writable, readOnly: false)
                #expect(try MountTable.mounts(at: writable).count == 1)
                try DeviceIO.writeFile("\(writable)/from-pod.txt", Array("pod a".utf8))
                #expect(try DeviceIO.readFile("\(staging)/from-pod.txt") == Array("pod a".utf8))

                let readOnly = fixture.path("pods/b/volumes/bind")
                try mounter.bindMount(source: staging, target: readOnly, readOnly: true)
                try mounter.bindMount(source: staging, target: readOnly, readOnly: true)
                #expect(try mounter.mountInfo(for: readOnly)?.isReadOnly == true)
                #expect(try DeviceIO.readFile("\(readOnly)/from-pod.txt") == Array("pod a".utf8))
                let fd = open("\(readOnly)/new.txt", O_WRONLY | O_CREAT, 0o644)
                #expect(fd == -1 && errno == EROFS, "a read-only bind must refuse writes")
                #expect(DeviceIO.writeError("\(readOnly)/from-pod.txt") == EROFS)
                #expect { try mounter.bindMount(source: staging, target: readOnly, readOnly: false) } throws: {
                    ($0 as? NodeHostError)?.code == .alreadyExists
                }
                #expect(try !mounter.mountInfo(for: staging)!.isReadOnly, "the staging mount stays writable")

                for target in [writable, readOnly] {
                    try mounter.unmount(target: target)
                    try mounter.unmount(target: target)
                }
                try fixture.unstage(name: "bind", device: device, mounts: [staging])
            }
        }

        @Test("a block device node bound onto a file target")
        func blockBind() throws {
            try NodeFixture.run { fixture in
                let mounter = fixture.mounter
                let (backend, file, device) = try fixture.exportAndAttach("block", size: 64 << 20)
                let target = fixture.path("pods/c/volumeDevices/block")
                try mounter.bindMount(source: device, target: target, readOnly: false)
                try mounter.bindMount(source: device, target: target, readOnly: false)
                #expect(try MountTable.mounts(at: target).count == 1)
                let status = try Syscall.status(of: target)
                #expect(status.st_mode & S_IFMT == S_IFBLK)
                #expect(status.st_rdev == (try Syscall.status(of: device)).st_rdev)

                let data = pattern(seed: 31, count: 1 << 20)
                try DeviceIO.write(data, to: target, at: 4 << 20, direct: true)
                #expect(try DeviceIO.read(device, at: 4 << 20, count: data.count, direct: true) == data)
                #expect(backend.bytes(at: 4 << 20, count: data.count) == data)

                // Read-only block publish: a read-only loop device over the same file.
                let readOnlyDevice = try fixture.attacher.attach(file: file, readOnly: true, directIO: true)
                #expect(readOnlyDevice != device)
                #expect(try fixture.attacher.attach(file: file, readOnly: true, directIO: true) == readOnlyDevice)
                #expect(try fixture.attacher.device(backingFile: file) == device, "the writable device comes first")
                let readOnlyTarget = fixture.path("pods/d/volumeDevices/block")
                try mounter.bindMount(source: readOnlyDevice, target: readOnlyTarget, readOnly: true)
                #expect(try DeviceIO.read(readOnlyTarget, at: 4 << 20, count: data.count, direct: true) == data)
                #expect(DeviceIO.writeError(readOnlyTarget) == EPERM, "a read-only loop device refuses writers")
                // A read-only bind alone does not protect a device node: the kernel lets writers
                // open device nodes on read-only mounts. Hence the read-only device above.
                let boundWritable = fixture.path("pods/e/volumeDevices/block")
                try mounter.bindMount(source: device, target: boundWritable, readOnly: true)
                #expect(DeviceIO.writeError(boundWritable) == 0)

                for path in [target, readOnlyTarget, boundWritable] { try mounter.unmount(target: path) }
                #expect(try fixture.detachFreeing(readOnlyDevice))
                try fixture.unstage(name: "block", device: device)
            }
        }

        @Test("a link swapped into a target's path cannot take a mount or an unmount out of kubelet's directory")
        func confinement() throws {
            try NodeFixture.run { fixture in
                let kubelet = fixture.path("kubelet")
                let outside = fixture.path("outside")
                let source = kubelet + "/plugins/staging/volume"
                try Syscall.makeDirectories(source)
                try Syscall.makeDirectories(kubelet + "/real-pods")
                try Syscall.makeDirectories(outside + "/pods")
                let mounter = LinuxMounter(confinedTo: kubelet)
                let unconfined = LinuxMounter()

                // A link that stays inside is followed, for the bind, the read-only remount and the unmount.
                #expect(symlink(kubelet + "/real-pods", kubelet + "/pods") == 0)
                try mounter.bindMount(source: source, target: kubelet + "/pods/a/mount", readOnly: true)
                #expect(try mounter.mountInfo(for: kubelet + "/real-pods/a/mount")?.isReadOnly == true)
                try mounter.unmount(target: kubelet + "/pods/a/mount")
                #expect(try !mounter.isMountPoint(kubelet + "/real-pods/a/mount"))

                // The same link, swapped (after the request was checked) to lead outside.
                #expect(unlink(kubelet + "/pods") == 0 && symlink(outside + "/pods", kubelet + "/pods") == 0)
                #expect { try mounter.bindMount(source: source, target: kubelet + "/pods/b/mount", readOnly: false) } throws: {
                    ($0 as? NodeHostError)?.code == .invalidArgument
                }
                #expect(try !mounter.isMountPoint(outside + "/pods/b/mount"), "nothing may be mounted outside")
                #expect(!FileManager.default.fileExists(atPath: outside + "/pods/b"), "nor any directory made there")
                // A file target (a block volume's) is not created through the link either.
                let deviceLike = kubelet + "/plugins/staging/device"
                let made = creat(deviceLike, 0o600)
                #expect(made >= 0)
                close(made)
                #expect { try mounter.bindMount(source: deviceLike, target: kubelet + "/pods/d/dev/volume", readOnly: false) } throws: {
                    ($0 as? NodeHostError)?.code == .invalidArgument
                }
                #expect(!FileManager.default.fileExists(atPath: outside + "/pods/d"), "nor any file made there")
                // A path that climbs out by name is refused before anything is opened.
                #expect { try mounter.bindMount(source: source, target: kubelet + "/real-pods/../../escaped", readOnly: false) } throws: {
                    ($0 as? NodeHostError)?.code == .invalidArgument
                }
                #expect(!FileManager.default.fileExists(atPath: fixture.path("escaped")))

                // A mount outside, reached through the link, is not unmounted.
                try unconfined.bindMount(source: source, target: outside + "/pods/c/mount", readOnly: false)
                #expect { try mounter.unmount(target: kubelet + "/pods/c/mount") } throws: {
                    ($0 as? NodeHostError)?.code == .invalidArgument
                }
                #expect(try mounter.isMountPoint(outside + "/pods/c/mount"), "a mount outside must survive")
                try unconfined.unmount(target: outside + "/pods/c/mount")
            }
        }
    }
}
