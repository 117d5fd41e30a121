#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

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
/// Opens close on exec: a test's descriptor must not outlive it in a program another test of
/// this process starts meanwhile (a driver inheriting it would keep the device busy).
enum RawDevice {
    static func write(_ data: Data, to path: String, at offset: Int64) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == data.count, fsync(fd) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    static func read(_ count: Int, from path: String, at offset: Int64) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var data = Data(count: count)
        let got = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        guard got == count else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return data
    }
}
