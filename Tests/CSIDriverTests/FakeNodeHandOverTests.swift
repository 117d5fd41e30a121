import BlockStore
@testable import CSIDriver
import CSIProto
import CSIValidation
import Foundation
import GRPCCore
import GRPCInProcessTransport
import NodeHostFakes
import Peering
import StrataTestSupport
import Testing

/// The ownership handover (VolumeStager+HandOver) between two nodes in one process: each node's
/// real stager and store over the in-memory NodeHost fakes, the peer protocol served in process
/// (no sockets, TLS, root, FUSE or loop devices). HandOverCrashTests kills real drivers in the
/// middle of it; this is the logic alone, fast enough to run anywhere.
@Suite("Ownership handover over in-memory fakes and in-process peers", .blockingTolerant)
struct FakeNodeHandOverTests {
    static let multiNodeBlock = Csi_V1_VolumeCapability.with {
        $0.block = .init()
        $0.accessMode = .with { $0.mode = .multiNodeMultiWriter }
    }

    @Test("A multi-node volume its owner does not stage moves to the node that stages it: the owner's bytes and every write through the target read back there, the copied layers collapse into the head, and the owner's copy is gone")
    func volumeMovesToTheNodeStagingIt() async throws {
        let hosts = (a: "192.0.2.1", b: "192.0.2.2")
        let transports = (a: InProcessTransport(), b: InProcessTransport())
        let clients = [GRPCClient(transport: transports.a.client), GRPCClient(transport: transports.b.client)]
        let connector = InProcessConnector(clientsByHost: [hosts.a: clients[0], hosts.b: clients[1]])
        let peerA = PeerSettings.StaticPeer(nodeID: "node-a", address: NetworkAddress(host: hosts.a, port: 9821))
        let peerB = PeerSettings.StaticPeer(nodeID: "node-b", address: NetworkAddress(host: hosts.b, port: 9821))
        let owner = try FakeNode(nodeID: "node-a", peering: .init(connector: connector, peers: [peerB]))
        let stager = try FakeNode(nodeID: "node-b", peering: .init(connector: connector, peers: [peerA]))
        defer {
            stager.close()
            owner.close()
        }
        let volume = try owner.store.createVolume(name: "vm-disk", size: 16 << 20, multiNode: true).id
        let golden = pattern(seed: 7, count: 128 << 10)
        let handle = try owner.store.open(volumeID: volume)
        try golden.withUnsafeBytes { try handle.write($0, at: 0) }
        try handle.flush()
        try handle.close()

        let servers = [
            GRPCServer(transport: transports.a.server, services: try #require(owner.context.peers).services(host: owner.context)),
            GRPCServer(
                transport: transports.b.server,
                services: try #require(stager.context.peers).services(host: stager.context) + [
                    NodeService(context: stager.context, stager: stager.stager, paths: PathRules(root: stager.kubelet)),
                ]),
        ]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for server in servers { group.addTask { try await server.serve() } }
            for client in clients { group.addTask { try await client.runConnections() } }
            defer {
                for server in servers { server.beginGracefulShutdown() }
                for client in clients { client.beginGracefulShutdown() }
            }
            let staging = stager.stagingPath(of: volume)
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            _ = try await Csi_V1_Node.Client(wrapping: clients[1]).nodeStageVolume(.with {
                $0.volumeID = volume
                $0.stagingTargetPath = staging
                $0.volumeCapability = Self.multiNodeBlock
            })
            let target = try stager.publish(volume, pod: "vm")
            let written = pattern(seed: 8, count: 64 << 10)
            try stager.write(written, at: 1 << 20, through: target)

            try await waitUntil("node-b owns the volume") {
                stager.stager.registry[volume]?.remoteOwner == nil && !stager.stager.isTakingOver(volume)
            }
            try await waitUntil("node-a deleted its copy") { (try? owner.store.volume(id: volume)) == nil }
            #expect(try stager.store.volume(id: volume).epoch > 0)
            // The layers the handover copied (the bulk and the last snapshot) are collapsed into
            // the head in the background: the next move sends the volume's data, not its history.
            stager.store.waitForBackgroundWork()
            #expect(try stager.store.volume(id: volume).chainDepth == 1)
            #expect(try stager.read(golden.count, at: 0, through: target) == golden)
            #expect(try stager.read(written.count, at: 1 << 20, through: target) == written)
            let late = pattern(seed: 9, count: 16 << 10)
            try stager.write(late, at: 2 << 20, through: target)
            try stager.stager.unpublish(volumeID: volume, targetPath: target)
            try stager.stager.unstage(volumeID: volume, stagingPath: staging)
            #expect(try stager.storedBytes(of: volume, count: golden.count, at: 0) == golden)
            #expect(try stager.storedBytes(of: volume, count: written.count, at: 1 << 20) == written)
            #expect(try stager.storedBytes(of: volume, count: late.count, at: 2 << 20) == late)
        }
    }

    /// Polls `condition` every 20 ms for up to 30 s.
    private func waitUntil(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting until \(what)")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
