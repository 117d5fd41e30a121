import Foundation
import Glibc
import KernelFiles
import StrataTestSupport
import Testing

@testable import NodeHost

extension DeviceTests {
    @Suite(.blockingTolerant) struct Filesystems {
        /// mkfs.xfs refuses filesystems under 300 MB.
        static let size: UInt64 = 320 << 20

        @Test("format once, mount, write, remount: files intact and the device never reformatted",
              arguments: FilesystemType.allCases)
        func formatMountRemount(fsType: FilesystemType) throws {
            try NodeFixture.run { fixture in
                let mounter = fixture.mounter
                let (_, file, device) = try fixture.exportAndAttach("fs", size: Self.size)
                #expect(try mounter.probeFilesystem(device: device) == nil, "a new volume is blank")
                #expect(try mounter.format(device: device, fsType: fsType, options: []) == .formatted)
                #expect(try mounter.probeFilesystem(device: device) == fsType.rawValue)

                let staging = fixture.path("staging/fs")
                try mounter.mount(source: device, target: staging, fsType: fsType.rawValue, options: ["noatime"], readOnly: false)
                try mounter.mount(source: device, target: staging, fsType: fsType.rawValue, options: ["noatime"], readOnly: false)
                #expect(try mounter.mountInfo(for: staging)?.source == device)
                #expect(try MountTable.mounts(at: staging).count == 1, "mounting twice must not stack mounts")
                let data = pattern(seed: 21, count: 3 << 20)
                try FileManager.default.createDirectory(atPath: "\(staging)/dir", withIntermediateDirectories: true)
                try DeviceIO.writeFile("\(staging)/dir/data.bin", data)
                try DeviceIO.writeFile("\(staging)/hello.txt", Array("hello strata\n".utf8))
                let stats = try mounter.filesystemStats(path: staging)
                #expect(stats.totalBytes > Self.size / 2 && stats.totalBytes <= Self.size)
                #expect(stats.usedBytes >= 3 << 20 && stats.availableBytes < stats.totalBytes)
                #expect(stats.totalInodes > 0 && stats.usedInodes >= 3)

                try mounter.unmount(target: staging)
                try mounter.unmount(target: staging)
                #expect(try !mounter.isMountPoint(staging))

                // Never reformat data: the same type is left alone, another type is refused.
                #expect(try mounter.format(device: device, fsType: fsType, options: []) == .alreadyFormatted)
                let other: FilesystemType = fsType == .ext4 ? .xfs : .ext4
                #expect { try mounter.format(device: device, fsType: other, options: []) } throws: {
                    ($0 as? NodeHostError)?.code == .notBlank
                }

                // Detach and attach again, as a later stage does: the files are all there.
                #expect(try fixture.detachFreeing(device))
                let again = try fixture.attacher.attach(file: file, readOnly: false, directIO: true)
                try mounter.mount(source: again, target: staging, fsType: fsType.rawValue, options: [], readOnly: false)
                #expect(try DeviceIO.readFile("\(staging)/dir/data.bin") == data)
                #expect(try DeviceIO.readFile("\(staging)/hello.txt") == Array("hello strata\n".utf8))
                try fixture.unstage(name: "fs", device: again, mounts: [staging])
            }
        }

        @Test("a device holding unknown data or a partition table is not blank and is not formatted")
        func foreignDataIsNotBlank() throws {
            try NodeFixture.run { fixture in
                let (backend, _, device) = try fixture.exportAndAttach("foreign", size: 64 << 20)
                let junk = pattern(seed: 22, count: 4096)
                try DeviceIO.write(junk, to: device, at: 8192, direct: true)
                #expect(try fixture.mounter.probeFilesystem(device: device) == "unknown data")
                #expect { try fixture.mounter.format(device: device, fsType: .ext4, options: []) } throws: {
                    ($0 as? NodeHostError)?.code == .notBlank
                }
                #expect(backend.bytes(at: 8192, count: 4096) == junk, "nothing was written")

                // An empty DOS partition table: a signature blkid reports as PTTYPE.
                var mbr = [UInt8](repeating: 0, count: 512)
                mbr[440...443] = [0x78, 0x56, 0x34, 0x12]
                mbr[446 + 4] = 0x83
                mbr[446 + 8] = 0x00; mbr[446 + 9] = 0x08  // first LBA 2048
                mbr[446 + 12] = 0x00; mbr[446 + 13] = 0x00; mbr[446 + 14] = 0x01  // 65536 sectors
                mbr[510] = 0x55; mbr[511] = 0xAA
                try DeviceIO.write([UInt8](repeating: 0, count: 16384), to: device, at: 0, direct: true)
                try DeviceIO.write(mbr, to: device, at: 0, direct: true)
                #expect(try fixture.mounter.probeFilesystem(device: device) == "dos partition table")
                #expect(throws: NodeHostError.self) { try fixture.mounter.format(device: device, fsType: .xfs, options: []) }
                try fixture.unstage(name: "foreign", device: device)
            }
        }

        @Test("online expansion: backend grows, export and loop device refresh, filesystem grows",
              arguments: FilesystemType.allCases)
        func onlineGrow(fsType: FilesystemType) throws {
            try NodeFixture.run { fixture in
                let mounter = fixture.mounter
                let (backend, file, device) = try fixture.exportAndAttach("grow", size: Self.size, capacity: 2 * Self.size)
                try mounter.format(device: device, fsType: fsType, options: [])
                let staging = fixture.path("staging/grow")
                try mounter.mount(source: device, target: staging, fsType: fsType.rawValue, options: [], readOnly: false)
                let data = pattern(seed: 23, count: 1 << 20)
                try DeviceIO.writeFile("\(staging)/before.bin", data)
                let before = try mounter.filesystemStats(path: staging)

                backend.grow(to: 2 * Self.size)
                #expect(try mounter.blockDeviceSize(device: device) == Self.size, "nothing changes until refreshed")
                #expect(try fixture.exporter.refreshSize(name: "grow") == 2 * Self.size)
                #expect(try Syscall.status(of: file).st_size == off_t(2 * Self.size))
                #expect(try fixture.attacher.refreshSize(device: device) == 2 * Self.size)
                #expect(try mounter.blockDeviceSize(device: device) == 2 * Self.size)
                if fsType == .ext4 && !NodeEnvironment.hasCapability(NodeEnvironment.capSysResource) {
                    // ext4's online resize ioctl needs CAP_SYS_RESOURCE; the failure must say why.
                    print("NodeHostTests: ext4 online grow not checked: this process lacks CAP_SYS_RESOURCE")
                    #expect { try mounter.growFilesystem(device: device, mountPoint: staging, fsType: fsType) } throws: {
                        guard let error = $0 as? NodeHostError else { return false }
                        return error.code == .commandFailed && error.message.contains("Permission denied")
                    }
                } else {
                    try mounter.growFilesystem(device: device, mountPoint: staging, fsType: fsType)
                    try mounter.growFilesystem(device: device, mountPoint: staging, fsType: fsType)  // idempotent
                    let after = try mounter.filesystemStats(path: staging)
                    #expect(after.totalBytes >= before.totalBytes + Self.size * 9 / 10)
                    #expect(after.availableBytes > before.availableBytes + Self.size * 8 / 10)
                    // The new space is usable: more than the old free space fits now.
                    let block = pattern(seed: 24, count: 1 << 20)
                    let blocks = Int(before.availableBytes >> 20) + 16
                    try DeviceIO.writeFile("\(staging)/after.bin", repeating: block, count: blocks)
                    #expect(try DeviceIO.read("\(staging)/after.bin", at: UInt64(blocks - 1) << 20, count: 1 << 20, direct: false) == block)
                }
                #expect(try DeviceIO.readFile("\(staging)/before.bin") == data)
                try fixture.unstage(name: "grow", device: device, mounts: [staging])
            }
        }
    }
}
