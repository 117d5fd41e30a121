import BlockStore
@testable import CSIDriver
import Foundation
import Logging
import NodeHost
import NodeHostFakes
import Peering
import StrataTestSupport

/// What outlives a driver process on a node: the kernel's devices and mounts (here the fake
/// attacher and mounter, and the table of exported files they reach), the store and the
/// staging registry on disk.
struct FakeKernel {
    let files = FakeExportTable()
    let attacher: FakeAttacher
    let mounter: FakeMounter

    init() {
        attacher = FakeAttacher(table: files)
        mounter = FakeMounter(devices: attacher)
    }
}

/// The node side of one driver process over in-memory NodeHost fakes: the real `VolumeStager`
/// with a real `BlockStore` and staging registry in a temporary directory. Needs no root, no
/// FUSE, no loop device and no mount. `restarted()` plays a restart without a keeper: this
/// process stops (its exports die, the devices over them fail I/O, the mounts stay), and a new
/// one starts over the same kernel, store and registry file.
final class FakeNode {
    let directory: TemporaryDirectory
    let store: BlockStore
    let kernel: FakeKernel
    let exporter: FakeExporter
    let stager: VolumeStager
    let context: DriverContext
    let peering: Peering?

    /// How this node reaches its peers (in process, see `InProcessConnector`).
    struct Peering {
        var connector: any PeerConnecting
        var peers: [PeerSettings.StaticPeer]
    }

    convenience init(nodeID: String = "fake-node", peering: Peering? = nil) throws {
        let directory = try TemporaryDirectory(.fast, label: "strata-fake-node")
        try FileManager.default.createDirectory(atPath: directory.path + "/state", withIntermediateDirectories: true)
        let store = try BlockStore(directory: directory.path + "/state/store")
        try self.init(directory: directory, store: store, kernel: FakeKernel(), nodeID: nodeID, peering: peering)
    }

    private init(directory: TemporaryDirectory, store: BlockStore, kernel: FakeKernel, nodeID: String, peering: Peering?) throws {
        self.directory = directory
        self.store = store
        self.kernel = kernel
        self.peering = peering
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let configuration = DriverConfiguration(
            nodeID: nodeID, stateDirectory: directory.path + "/state", mode: .node,
            kubeletDirectory: directory.path + "/kubelet", logger: logger)
        let context = DriverContext(configuration: configuration)
        self.context = context
        context.storeDidOpen(store)
        if let peering {
            var settings = PeerSettings(tlsDirectory: directory.path + "/tls")
            settings.staticPeers = peering.peers
            context.peersDidStart(PeerRuntime(
                settings: settings, nodeID: nodeID, metrics: NoPeerMetrics(), logger: logger, connector: peering.connector,
                store: { store }))
        }
        exporter = FakeExporter(directory: configuration.exportDirectory, table: kernel.files)
        stager = VolumeStager(
            context: context, exporter: exporter, attacher: kernel.attacher, mounter: kernel.mounter,
            backends: DriverBackends(context: context),
            registry: try StagingRegistry(directory: directory.path + "/state/node", fileName: "staged-volumes.json"))
        try stager.startServing()
        context.nodeDidStart(stager)
    }

    /// Stops this process's stager (without a keeper its exports die) and starts the next one
    /// over the same kernel, store and registry, as the driver does at start.
    func restarted() throws -> FakeNode {
        stager.shutDown()
        return try FakeNode(directory: directory, store: store, kernel: kernel, nodeID: context.configuration.nodeID, peering: peering)
    }

    /// Stops the stager and closes the store.
    func close() {
        stager.shutDown()
        store.close()
    }

    // MARK: Volumes

    /// A golden volume holding `golden` at offset 0, snapshotted, and two clones of the snapshot.
    func twoClones(of golden: [UInt8], size: UInt64 = 16 << 20) throws -> (String, String) {
        let source = try store.createVolume(name: "golden", size: size)
        let handle = try store.open(volumeID: source.id)
        try golden.withUnsafeBytes { try handle.write($0, at: 0) }
        try handle.flush()
        try handle.close()
        let snapshot = try store.createSnapshot(name: "golden-snapshot", of: source.id)
        let first = try store.createVolume(name: "first-clone", size: size, source: .snapshot(id: snapshot.id))
        let second = try store.createVolume(name: "second-clone", size: size, source: .snapshot(id: snapshot.id))
        return (first.id, second.id)
    }

    /// Bytes of a volume read straight from the store, past every fake.
    func storedBytes(of volumeID: String, count: Int, at offset: UInt64) throws -> [UInt8] {
        let handle = try store.open(volumeID: volumeID)
        defer { try? handle.close() }
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try handle.read(into: $0, at: offset) }
        return bytes
    }

    // MARK: Kubelet's calls

    var kubelet: String { directory.path + "/kubelet" }
    func stagingPath(of volumeID: String) -> String { "\(kubelet)/plugins/kubernetes.io/csi/strata.csi.dev/\(volumeID)/globalmount" }
    func targetPath(of volumeID: String, pod: String) -> String { "\(kubelet)/pods/\(pod)/volumes/kubernetes.io~csi/\(volumeID)/mount" }

    /// The registry record kubelet's NodeStageVolume makes for `access`.
    func record(_ volumeID: String, _ access: StagedVolume.Access) -> StagedVolume {
        StagedVolume(volumeID: volumeID, stagingPath: stagingPath(of: volumeID), access: access, readOnly: false)
    }

    /// Stages as kubelet does: it creates the staging directory first.
    func stage(_ volumeID: String, _ access: StagedVolume.Access) throws {
        try FileManager.default.createDirectory(atPath: stagingPath(of: volumeID), withIntermediateDirectories: true)
        try stager.stage(record(volumeID, access))
    }

    @discardableResult
    func publish(_ volumeID: String, pod: String, readOnly: Bool = false) throws -> String {
        let target = targetPath(of: volumeID, pod: pod)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try stager.publish(volumeID: volumeID, stagingPath: stagingPath(of: volumeID), targetPath: target, readOnly: readOnly)
        return target
    }

    // MARK: I/O as a pod does it

    /// The bytes a pod sees at `path` (a block target, a staging mount, or a bind of one),
    /// followed as the kernel would: the mount there, its device, the exported file the device
    /// holds, that file's backend. Fails where any link is missing or dead.
    func backend(at path: String) throws -> any BlockBackend {
        guard let device = kernel.mounter.device(at: path) else { throw NodeHostError(.notFound, "no device is mounted at \(path)") }
        guard let file = kernel.attacher.file(behind: device) else { throw NodeHostError(.notFound, "\(device) is not attached") }
        return try file.liveBackend()
    }

    /// Refused with EROFS, as open(2) for writing is, when the mount at `path` or the loop
    /// device under it is read-only.
    func write(_ bytes: [UInt8], at offset: UInt64, through path: String) throws {
        if kernel.mounter.isReadOnly(at: path) == true || kernel.mounter.device(at: path).flatMap({ kernel.attacher.isReadOnly(device: $0) }) == true {
            throw NodeHostError(.systemCall, "open \(path) for writing: read-only file system", errno: EROFS)
        }
        let backend = try backend(at: path)
        try bytes.withUnsafeBytes { try backend.write($0, at: offset) }
        try backend.flush()
    }

    func read(_ count: Int, at offset: UInt64, through path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let backend = try backend(at: path)
        try bytes.withUnsafeMutableBytes { try backend.read(into: $0, at: offset) }
        return bytes
    }
}
