#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import BlockStore
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// A node for restart tests: the real strata-csi (restarted at will with the same flags), a
/// keeper when asked for, and volumes staged and published as kubelet would.
final class RestartedNode: @unchecked Sendable {
    struct Volume: Sendable {
        let id: String
        let staging: String
        let target: String
        let capability: Csi_V1_VolumeCapability
    }

    let directory: TemporaryDirectory
    let keeper: KeeperProcess?
    private(set) var driver: DriverProcess
    let arguments: [String]
    var kubelet: String { directory.path + "/kubelet" }

    init(withKeeper: Bool) throws {
        directory = try TemporaryDirectory()
        keeper = withKeeper ? try KeeperProcess(directory: directory.path) : nil
        arguments = ["--kubelet-dir", directory.path + "/kubelet", "--mode", "all"]
            + (keeper.map { ["--fuse-keeper-socket", $0.socketPath] } ?? [])
        driver = try DriverProcess.started(arguments: arguments, directory: directory)
    }

    /// Stops the driver with `signal` and starts the next one with the same flags; returns once
    /// it reports ready.
    func restart(with signal: Int32) throws {
        driver.signal(signal)
        _ = try driver.waitForExit()
        driver = try DriverProcess.started(arguments: arguments, directory: directory)
    }

    func create(_ name: String, capability: Csi_V1_VolumeCapability, bytes: Int64 = 64 << 20) async throws -> String {
        try await driver.withClient { client in
            var request = Requests.createVolume(name, bytes: bytes)
            request.volumeCapabilities = [capability]
            return try await Csi_V1_Controller.Client(wrapping: client).createVolume(request).volume.volumeID
        }
    }

    /// Stages and publishes for pod `pod`.
    func stageAndPublish(_ id: String, capability: Csi_V1_VolumeCapability, pod: String) async throws -> Volume {
        let staging = "\(kubelet)/plugins/kubernetes.io/csi/strata.csi.dev/\(id)/globalmount"
        let target = "\(kubelet)/pods/\(pod)/volumes/kubernetes.io~csi/\(id)/mount"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try await driver.withClient { client in
            let node = Csi_V1_Node.Client(wrapping: client)
            _ = try await node.nodeStageVolume(.with { $0.volumeID = id; $0.stagingTargetPath = staging; $0.volumeCapability = capability })
            _ = try await node.nodePublishVolume(.with {
                $0.volumeID = id; $0.stagingTargetPath = staging; $0.targetPath = target; $0.volumeCapability = capability
            })
        }
        return Volume(id: id, staging: staging, target: target, capability: capability)
    }

    func unpublishAndUnstage(_ volume: Volume) async throws {
        try await driver.withClient { client in
            let node = Csi_V1_Node.Client(wrapping: client)
            _ = try await node.nodeUnpublishVolume(.with { $0.volumeID = volume.id; $0.targetPath = volume.target })
            _ = try await node.nodeUnstageVolume(.with { $0.volumeID = volume.id; $0.stagingTargetPath = volume.staging })
        }
    }

    /// The volume condition NodeGetVolumeStats reports at the target: nil when healthy.
    func abnormality(_ volume: Volume) async throws -> String? {
        let response = try await driver.withClient { client in
            try await Csi_V1_Node.Client(wrapping: client).nodeGetVolumeStats(.with { $0.volumeID = volume.id; $0.volumePath = volume.target })
        }
        return response.volumeCondition.abnormal ? response.volumeCondition.message : nil
    }

    /// Reads a volume straight from the store (the driver must be stopped).
    static func contents(of volumeID: String, storeDirectory: String, count: Int) throws -> [UInt8] {
        let store = try BlockStore(directory: storeDirectory)
        defer { store.close() }
        let handle = try store.open(volumeID: volumeID)
        defer { try? handle.close() }
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try handle.read(into: $0, at: 0) }
        return bytes
    }

    var storeDirectory: String { directory.path + "/state/store" }

    /// `e2fsck -fn` of an ext4 volume copied out of the store (the driver must be stopped):
    /// its exit status (0: clean) and output.
    func checkFilesystem(_ volumeID: String, bytes: Int) throws -> (status: Int32, output: String) {
        let image = directory.path + "/\(volumeID).img"
        let contents = try Self.contents(of: volumeID, storeDirectory: storeDirectory, count: bytes)
        FileManager.default.createFile(atPath: image, contents: Data(contents))
        defer { try? FileManager.default.removeItem(atPath: image) }
        let check = try ExternalTool.outcome("/sbin/e2fsck", ["-fn", image])
        return (check.status, check.output)
    }

    func stop() { driver.stop() }
}
