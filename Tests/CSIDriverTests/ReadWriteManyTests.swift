#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import PeerProto
import StrataTestSupport
import Testing

/// ReadWriteMany Block volumes across nodes, as a KubeVirt live migration uses them: the volume
/// lives on node A, node B stages it too and serves a real block device whose I/O goes to A,
/// each node sees the other's writes, a third node is refused, and the volume is deleted
/// through any node's controller.
@Suite("ReadWriteMany Block", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available), .blockingTolerant)
struct ReadWriteManyTests {
    static let volumeBytes: Int64 = 64 << 20

    static let sharedBlock = Csi_V1_VolumeCapability.with {
        $0.block = .init()
        $0.accessMode = .with { $0.mode = .multiNodeMultiWriter }
    }

    static func sharedVolume(_ name: String, bytes: Int64 = volumeBytes, snapshot: String? = nil) -> Csi_V1_CreateVolumeRequest {
        var request = Requests.createVolume(name, bytes: bytes, snapshot: snapshot)
        request.volumeCapabilities = [sharedBlock]
        return request
    }

    /// Drops the device's page cache, so that reads see what the other node wrote (QEMU opens
    /// these devices with O_DIRECT; the test's plain reads go through the cache).
    static func dropCache(_ device: String) throws { try ExternalTool.run("blockdev", "--flushbufs", device) }

    @Test("A's RWX Block volume served on B: each node reads the other's writes, a third node is refused, deleted through any node")
    func servedOnTwoNodes() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b", "c"])
        defer { cluster.tearDown() }
        for node in ["a", "b", "c"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"], c = cluster["c"]
        let layersOnA = a.layerFileCount

        // A golden snapshot on A, and an RWX clone of it (a VM disk): no topology, so its PV
        // can be used, and its VM migrated, anywhere.
        var image = SparseImage(size: Self.volumeBytes)
        let golden = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("golden", bytes: Self.volumeBytes)) }.volume
        let goldenDevice = try await a.attach(golden.volumeID)
        for extent in SparseImage.scattered(count: 8, length: 128 << 10, size: Self.volumeBytes, seed: 3) {
            try image.write(extent, to: goldenDevice)
        }
        try await a.detach(golden.volumeID)
        let snapshot = try await a.controller { try await $0.createSnapshot(Requests.createSnapshot("golden-snap", of: golden.volumeID)) }.snapshot
        let disk = try await a.controller { try await $0.createVolume(Self.sharedVolume("vm-disk", snapshot: snapshot.snapshotID)) }.volume
        #expect(disk.accessibleTopology.map(\.segments) == [[DriverConfiguration.multiNodeTopologyKey: "true"]],
                "an RWX volume is reachable from every node with peers: \(disk.accessibleTopology)")
        let again = try await a.controller { try await $0.createVolume(Self.sharedVolume("vm-disk", snapshot: snapshot.snapshotID)) }.volume
        #expect(again.volumeID == disk.volumeID, "CreateVolume is idempotent for RWX volumes")
        await #expect(throws: RPCError.self, "the same name as a single-node volume is another volume") {
            _ = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("vm-disk", bytes: Self.volumeBytes, snapshot: snapshot.snapshotID)) }
        }

        // Staged and published on A (the VM runs there), then on B (the migration target).
        let deviceA = try await a.attach(disk.volumeID, capability: Self.sharedBlock)
        try image.verify(deviceA, "the clone on its owner A")
        let fromA = SparseImage.Extent(offset: 5 << 20, data: MultiNode.pattern(seed: 11, count: 256 << 10))
        try image.write(fromA, to: deviceA)
        let deviceB = try await b.attach(disk.volumeID, capability: Self.sharedBlock)
        try image.verify(deviceB, "the volume on B, served from A")
        let fromB = SparseImage.Extent(offset: 40 << 20, data: MultiNode.pattern(seed: 12, count: 1 << 20))
        try image.write(fromB, to: deviceB)
        try Self.dropCache(deviceA)
        try image.verify(deviceA, "A reads what B wrote")
        #expect(b.layerFileCount == 0, "B holds none of the volume's data: it is served from A")

        // A third node is refused, naming the two that stage it.
        do {
            _ = try await c.attach(disk.volumeID, capability: Self.sharedBlock)
            Issue.record("a third node staged the volume")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition, "\(error)\nC: \(String(c.log.suffix(3000)))\nA: \(String(a.log.suffix(3000)))")
            #expect(error.message.contains("node-a") && error.message.contains("node-b"), "\(error.message)")
        }

        // B's volume condition is healthy while A answers.
        let stats = try await b.withClient { client in
            try await Csi_V1_Node.Client(wrapping: client).nodeGetVolumeStats(.with {
                $0.volumeID = disk.volumeID; $0.volumePath = b.devicePath(disk.volumeID)
            })
        }
        #expect(stats.hasVolumeCondition && !stats.volumeCondition.abnormal, "\(stats.volumeCondition.message)")
        let infoB = try await b.withClient { try await Csi_V1_Node.Client(wrapping: $0).nodeGetInfo(.init()) }
        #expect(infoB.accessibleTopology.segments == [DriverConfiguration.topologyKey: "node-b", DriverConfiguration.multiNodeTopologyKey: "true"],
                "B's topology admits the RWX volume's: \(infoB.accessibleTopology)")
        #expect(stats.volumeCondition.message.contains("served from its owner, node node-a"), "\(stats.volumeCondition.message)")

        // A VolumeSnapshot of the VM's disk, which distributed snapshotting may hand to B's
        // csi-snapshotter: taken on A, where the volume lives, and deleted through B there too.
        let diskSnapshot = try await b.controller {
            try await $0.createSnapshot(Requests.createSnapshot("vm-disk-snap", of: disk.volumeID))
        }.snapshot
        let takenOnA = try await a.controller { try await $0.listSnapshots(.with { $0.snapshotID = diskSnapshot.snapshotID }) }
        #expect(takenOnA.entries.count == 1, "the snapshot was taken on A, the volume's owner")
        _ = try await b.controller { try await $0.deleteSnapshot(.with { $0.snapshotID = diskSnapshot.snapshotID }) }
        let leftOnA = try await a.controller { try await $0.listSnapshots(.with { $0.snapshotID = diskSnapshot.snapshotID }) }
        #expect(leftOnA.entries.isEmpty, "deleted through B, the snapshot is gone from A")

        // Expanded through B's sidecars: grown on A (the owner), then each node's kubelet calls
        // NodeExpandVolume; B's device, served from A, takes the new size, and a write past the
        // old end on B reads back on A.
        let grown = Self.volumeBytes + (16 << 20)
        _ = try await b.controller {
            try await $0.controllerExpandVolume(.with {
                $0.volumeID = disk.volumeID
                $0.capacityRange = .with { $0.requiredBytes = grown }
            })
        }
        for node in [b, a] {
            let expanded = try await node.withClient { client in
                try await Csi_V1_Node.Client(wrapping: client).nodeExpandVolume(.with {
                    $0.volumeID = disk.volumeID
                    $0.volumePath = node.devicePath(disk.volumeID)
                    $0.capacityRange = .with { $0.requiredBytes = grown }
                })
            }
            #expect(expanded.capacityBytes == grown, "\(node.name): \(expanded.capacityBytes)")
        }
        for device in [deviceA, deviceB] {
            let bytes = try ExternalTool.run("blockdev", "--getsize64", device).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(bytes == "\(grown)", "\(device) is \(bytes) bytes after the expansion")
        }
        let pastTheOldEnd = MultiNode.pattern(seed: 14, count: 64 << 10)
        try RawDevice.write(pastTheOldEnd, to: deviceB, at: Self.volumeBytes + (4 << 20))
        try Self.dropCache(deviceA)
        #expect(try RawDevice.read(pastTheOldEnd.count, from: deviceA, at: Self.volumeBytes + (4 << 20)) == pastTheOldEnd,
                "A reads what B wrote past the old end")

        // The migration ends: A lets go, and the volume moves to B, which serves it on.
        let layersBeforeMove = a.layerFileCount
        try await a.detach(disk.volumeID)
        try await Self.waitUntilOwned(disk.volumeID, by: b)
        #expect(b.layerFileCount > 0, "B holds the volume's layers now")
        try image.verify(deviceB, "the volume on B, its new owner")
        try await Self.waitFor("A frees what it held of the volume") { a.layerFileCount < layersBeforeMove }
        let lastFromB = SparseImage.Extent(offset: 60 << 20, data: MultiNode.pattern(seed: 13, count: 64 << 10))
        try image.write(lastFromB, to: deviceB)
        try await b.detach(disk.volumeID)
        let deviceC = try await c.attach(disk.volumeID, capability: Self.sharedBlock)
        try image.verify(deviceC, "every write of A and B, read on C")

        // Deleting through a node that does not hold it goes to its owner (B now); while C stages
        // it, the owner refuses.
        do {
            _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = disk.volumeID }) }
            Issue.record("a volume staged on C was deleted")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition, "\(error)")
        }
        try await c.detach(disk.volumeID)
        _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = disk.volumeID }) }
        await #expect(throws: RPCError.self, "the volume is gone from B") {
            _ = try await b.controller { try await $0.controllerGetVolume(.with { $0.volumeID = disk.volumeID }) }
        }
        _ = try await c.controller { try await $0.deleteVolume(.with { $0.volumeID = disk.volumeID }) }
        _ = try await a.controller { try await $0.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshotID }) }
        _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = golden.volumeID }) }
        #expect(a.layerFileCount == layersOnA, "every layer of the volume was freed on A")
        #expect(b.layerFileCount == 0 && c.layerFileCount == 0)
    }

    @Test("Refused: RWX Filesystem, a single-node volume on another node, remote I/O from a node that does not stage the volume")
    func refusals() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]

        var asked = Requests.createVolume("rwx-fs", bytes: Self.volumeBytes)
        asked.volumeCapabilities = [.with { $0.mount = .init(); $0.accessMode = .with { $0.mode = .multiNodeMultiWriter } }]
        let filesystem = asked
        do {
            _ = try await a.controller { try await $0.createVolume(filesystem) }
            Issue.record("an RWX Filesystem volume was created")
        } catch let error as RPCError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("Block"), "\(error.message)")
        }

        // A single-node volume of A: B may not stage it, whatever it asks.
        let single = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("rwo", bytes: Self.volumeBytes)) }.volume
        await #expect(throws: RPCError.self) { _ = try await b.attach(single.volumeID) }
        do {
            _ = try await b.attach(single.volumeID, capability: Self.sharedBlock)
            Issue.record("a single-node volume was staged on another node")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition, "\(error)")
        }

        // An RWX volume of A that B does not stage: a peer (with the cluster's certificate)
        // cannot read or write it, nor with B's name; nothing is written.
        let shared = try await a.controller { try await $0.createVolume(Self.sharedVolume("rwx")) }.volume
        let request = Strata_Peer_V1_WriteRequest.with {
            $0.session = .with { $0.volumeID = shared.volumeID; $0.nodeID = "node-b"; $0.epoch = 1 }
            $0.offset = 0
            $0.data = Data(repeating: 0xAB, count: 4096)
        }
        do {
            _ = try await Self.withRemoteVolumeClient(cluster, "a") { try await $0.write(request, options: PeerFaultTests.quick) }
            Issue.record("a node that does not stage the volume wrote to it")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied, "\(error)")
        }
        // And a single-node volume is never served remotely.
        do {
            _ = try await Self.withRemoteVolumeClient(cluster, "a") { client in
                try await client.attach(.with { $0.volumeID = single.volumeID; $0.nodeID = "node-b" }, options: PeerFaultTests.quick)
            }
            Issue.record("a single-node volume was attached remotely")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition, "\(error)")
        }
        let deviceA = try await a.attach(shared.volumeID, capability: Self.sharedBlock)
        #expect(try RawDevice.read(4096, from: deviceA, at: 0) == Data(count: 4096), "nothing was written")
        try await a.detach(shared.volumeID)

        // A NodeStage on B cut by a crash after A admitted B and before B recorded it: A counts
        // B as a stager (so it keeps the volume), until kubelet unstages the uncertain staging
        // on B, which tells A to forget B.
        _ = try await Self.withRemoteVolumeClient(cluster, "a") { client in
            try await client.attach(.with { $0.volumeID = shared.volumeID; $0.nodeID = "node-b" }, options: PeerFaultTests.quick)
        }
        do {
            _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = shared.volumeID }) }
            Issue.record("a volume its owner counts as staged on B was deleted")
        } catch let error as RPCError {
            #expect(error.code == .failedPrecondition, "\(error)")
        }
        let staging = b.stagingPath(shared.volumeID)
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        _ = try await b.withClient { client in
            try await Csi_V1_Node.Client(wrapping: client).nodeUnstageVolume(.with {
                $0.volumeID = shared.volumeID; $0.stagingTargetPath = staging
            })
        }
        _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = shared.volumeID }) }
    }

    @Test("The owner goes away while B serves the volume: B's I/O waits, its condition says why, and goes on when the owner returns; B stops promptly, restarts and serves again")
    func ownerAndServerFaults() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]
        var image = SparseImage(size: Self.volumeBytes)
        let disk = try await a.controller { try await $0.createVolume(Self.sharedVolume("vm-disk")) }.volume.volumeID
        // A stages it too (the VM's source), so the volume stays on A throughout.
        let deviceA = try await a.attach(disk, capability: Self.sharedBlock)
        let deviceB = try await b.attach(disk, capability: Self.sharedBlock)
        let early = SparseImage.Extent(offset: 1 << 20, data: MultiNode.pattern(seed: 21, count: 128 << 10))
        try image.write(early, to: deviceB)

        // A dies: a read on B waits instead of failing, and B says why.
        a.kill()
        try Self.dropCache(deviceB)
        let waiting = Self.readInBackground(early.data.count, from: deviceB, at: early.offset)
        var condition = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let stats = try await Self.volumeStats(disk, on: b)
            if stats.volumeCondition.abnormal { condition = stats.volumeCondition.message; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(condition.contains("node-a"), "B's volume condition while its owner is down: \(condition)")
        try await Task.sleep(for: .seconds(1))
        #expect(waiting.result == nil, "a read while the owner is down waits; it does not fail")

        // A comes back (its catalog still admits B): the read completes with the right bytes.
        try cluster.start("a")
        let read = try await waiting.value()
        #expect(read == early.data, "the read that waited returns the bytes written before the owner died")
        let healthy = try await Self.volumeStats(disk, on: b)
        #expect(!healthy.volumeCondition.abnormal, "\(healthy.volumeCondition.message)")

        // B is stopped (SIGTERM, an upgrade) and restarts: its open remote-I/O stream to A does
        // not hold its exit, and it serves the volume again from A without being admitted anew.
        let stopping = ContinuousClock.now
        b.stop()
        #expect(stopping.duration(to: .now) < .seconds(10), "B took \(stopping.duration(to: .now)) to stop on SIGTERM")
        try cluster.start("b")
        try Self.dropCache(deviceB)
        try image.verify(deviceB, "B after its own restart")
        let late = SparseImage.Extent(offset: 30 << 20, data: MultiNode.pattern(seed: 22, count: 64 << 10))
        try image.write(late, to: deviceB)
        try await b.detach(disk)
        try Self.dropCache(deviceA)
        try image.verify(deviceA, "every write B made, on A")
        try await a.detach(disk)
        _ = try await b.controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
    }

    /// Waits until `node` owns `volumeID`: its volume condition says the volume lives there
    /// (not only that it no longer names another owner: while that owner does not answer, the
    /// condition is abnormal and names no owner either).
    static func waitUntilOwned(_ volumeID: String, by node: ClusterNode, timeout: Duration = .seconds(60)) async throws {
        try await waitFor("node \(node.nodeID) owning volume \(volumeID)", timeout: timeout) {
            let condition = try await volumeStats(volumeID, on: node).volumeCondition
            return !condition.abnormal && condition.message.contains("lives here on node \(node.nodeID)")
        }
    }

    static func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out waiting for \(what)")
        throw POSIXError(.ETIMEDOUT)
    }

    static func volumeStats(_ volumeID: String, on node: ClusterNode) async throws -> Csi_V1_NodeGetVolumeStatsResponse {
        try await node.withClient { client in
            try await Csi_V1_Node.Client(wrapping: client).nodeGetVolumeStats(.with {
                $0.volumeID = volumeID; $0.volumePath = node.devicePath(volumeID)
            })
        }
    }

    /// A read on a thread of its own (it may block for long), whose outcome can be polled.
    final class BackgroundRead: @unchecked Sendable {
        private let lock = NSLock()
        private var outcome: Result<Data, any Error>?
        private let done = DispatchSemaphore(value: 0)

        var result: Result<Data, any Error>? { lock.withLock { outcome } }

        func finish(_ result: Result<Data, any Error>) {
            lock.withLock { outcome = result }
            done.signal()
        }

        func value(timeout: Duration = .seconds(60)) async throws -> Data {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if let result { return try result.get() }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw POSIXError(.ETIMEDOUT)
        }
    }

    static func readInBackground(_ count: Int, from device: String, at offset: Int64) -> BackgroundRead {
        let read = BackgroundRead()
        Thread.detachNewThread { read.finish(Result { try RawDevice.read(count, from: device, at: offset) }) }
        return read
    }

    /// A client of node `node`'s RemoteVolume service with the cluster's own certificate.
    static func withRemoteVolumeClient<Result: Sendable>(
        _ cluster: PeerCluster, _ node: String,
        _ body: @Sendable (Strata_Peer_V1_RemoteVolume.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        let base = cluster.tlsDirectory
        let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
            certificateChain: [.file(path: "\(base)/tls.crt", format: .pem)], privateKey: .file(path: "\(base)/tls.key", format: .pem)
        ) {
            $0.trustRoots = .certificates([.file(path: "\(base)/ca.crt", format: .pem)])
            $0.serverCertificateVerification = .noHostnameVerification
        }
        return try await withGRPCClient(
            transport: .http2NIOPosix(target: .ipv4(address: cluster.address(node), port: PeerCluster.peerPort), transportSecurity: security)
        ) { client in try await body(Strata_Peer_V1_RemoteVolume.Client(wrapping: client)) }
    }
}
