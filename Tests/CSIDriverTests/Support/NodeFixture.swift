#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import KernelFiles
import Testing

/// Whether this machine can run the node path for real: root, FUSE and loop devices.
enum NodeEnvironment {
    static var missing: String? {
        if geteuid() != 0 { return "node tests need root (mount, loop devices)" }
        if !FileManager.default.fileExists(atPath: "/dev/fuse") { return "node tests need /dev/fuse" }
        if !FileManager.default.fileExists(atPath: "/dev/loop-control") { return "node tests need loop devices (/dev/loop-control)" }
        return nil
    }

    static var available: Bool {
        if let missing { print("skipping node tests: \(missing)") }
        return missing == nil
    }

    /// ext4 grows online only with CAP_SYS_RESOURCE, which some sandboxes withhold even from root.
    static var hasSysResource: Bool {
        guard let status = try? KernelFile.read("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.split(separator: "\t").last ?? "", radix: 16)
        else { return false }
        return mask & (1 << 24) != 0
    }

    /// Mount points and loop devices that mention `path`: what a test must leave none of.
    static func leftovers(under path: String) -> [String] {
        var found: [String] = []
        for mount in (try? MountTable.read()) ?? [] where mount.mountPoint.contains(path) || mount.source.contains(path) {
            found.append("mount: \(mount.mountPoint) (\(mount.fsType) from \(mount.source))")
        }
        for (device, backing) in loopBackingFiles() where backing.contains(path) {
            found.append("loop device \(device) → \(backing)")
        }
        return found
    }

    /// Every bound loop device (loopN) with the backing file sysfs shows for it.
    static func loopBackingFiles() -> [(device: String, backing: String)] {
        let blocks = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
        return blocks.filter { $0.hasPrefix("loop") }.sorted().compactMap { device in
            guard let backing = try? KernelFile.readTrimmed("/sys/block/\(device)/loop/backing_file") else { return nil }
            return (device, backing)
        }
    }
}

/// Paths laid out as kubelet lays them out, and the calls kubelet makes, for one volume.
struct KubeletVolume {
    let driver: InProcessDriver
    let volumeID: String
    let capability: Csi_V1_VolumeCapability

    var kubelet: String { driver.directory.path + "/kubelet" }
    var stagingPath: String { "\(kubelet)/plugins/kubernetes.io/csi/strata.csi.dev/\(volumeID)/globalmount" }
    func targetPath(_ pod: String) -> String { "\(kubelet)/pods/\(pod)/volumes/kubernetes.io~csi/\(volumeID)/mount" }

    /// Stages, as kubelet does (it creates the staging directory first); twice, to prove idempotency.
    func stage() async throws {
        try FileManager.default.createDirectory(atPath: stagingPath, withIntermediateDirectories: true)
        let request = Csi_V1_NodeStageVolumeRequest.with {
            $0.volumeID = volumeID
            $0.stagingTargetPath = stagingPath
            $0.volumeCapability = capability
        }
        _ = try await driver.node.nodeStageVolume(request)
        _ = try await driver.node.nodeStageVolume(request)
    }

    func publish(_ pod: String, readOnly: Bool = false) async throws -> String {
        let target = targetPath(pod)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let request = Csi_V1_NodePublishVolumeRequest.with {
            $0.volumeID = volumeID
            $0.stagingTargetPath = stagingPath
            $0.targetPath = target
            $0.volumeCapability = capability
            $0.readonly = readOnly
        }
        _ = try await driver.node.nodePublishVolume(request)
        _ = try await driver.node.nodePublishVolume(request)
        return target
    }

    func unpublish(_ pod: String) async throws {
        let request = Csi_V1_NodeUnpublishVolumeRequest.with { $0.volumeID = volumeID; $0.targetPath = targetPath(pod) }
        _ = try await driver.node.nodeUnpublishVolume(request)
        _ = try await driver.node.nodeUnpublishVolume(request)
        #expect(!FileManager.default.fileExists(atPath: targetPath(pod)), "the target must be removed")
    }

    func unstage() async throws {
        let request = Csi_V1_NodeUnstageVolumeRequest.with { $0.volumeID = volumeID; $0.stagingTargetPath = stagingPath }
        _ = try await driver.node.nodeUnstageVolume(request)
        _ = try await driver.node.nodeUnstageVolume(request)
    }
}

extension Requests {
    static func filesystemCapability(_ fsType: String) -> Csi_V1_VolumeCapability {
        .with { $0.mount = .with { $0.fsType = fsType }; $0.accessMode = .with { $0.mode = .singleNodeWriter } }
    }
}

/// Reads and writes raw bytes on a device node (or any file) with plain POSIX calls.
enum RawDevice {
    static func write(_ data: Data, to path: String, at offset: Int64) throws {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == data.count, fsync(fd) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    static func read(_ count: Int, from path: String, at offset: Int64) throws -> Data {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var data = Data(count: count)
        let got = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        guard got == count else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return data
    }
}
