import BlockStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Logging
import PeerProto
import Testing
@testable import Peering

/// The receiver's checks of a layer stream, against a peer that alters what it sends: a chunk
/// with a flipped byte, a chunk whose extent moved, a dropped chunk, a wrong layer digest. Each
/// must be refused (DATA_LOSS from the fetch) and leave no replica; the same stream unaltered
/// commits byte-exact. In process (no root, no network): the checks are the fetcher's, whatever
/// the transport.
@Suite("Peer chunk integrity")
struct PeerChunkIntegrityTests {
    enum Alteration: String, CaseIterable, Sendable {
        case none, flippedByte, movedExtent, droppedChunk, wrongLayerDigest
    }

    @Test("An altered layer stream is refused and leaves nothing; the same stream unaltered commits", arguments: Alteration.allCases)
    func alteredStreamsAreRefused(_ alteration: Alteration) async throws {
        let a = try TemporaryDirectory(), b = try TemporaryDirectory()
        let source = try BlockStore(directory: a.path, options: StoreOptions(backgroundFlatten: false))
        defer { source.close() }
        let volume = try source.createVolume(name: "golden", size: 16 << 20, clusterSize: 65536)
        let handle = try source.open(volumeID: volume.id)
        var generator = SystemRandomNumberGenerator()
        // 5 MiB in two runs: several 1 MiB chunks.
        let data = (0..<(5 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try data.withUnsafeBytes { try handle.write(UnsafeRawBufferPointer(rebasing: $0[0..<(3 << 20)]), at: 1 << 20) }
        try data.withUnsafeBytes { try handle.write(UnsafeRawBufferPointer(rebasing: $0[(3 << 20)...]), at: 8 << 20) }
        try handle.flush()
        try handle.close()
        let snapshot = try source.createSnapshot(name: "golden-snap", of: volume.id)
        let target = try BlockStore(directory: b.path, options: StoreOptions(backgroundFlatten: false))
        defer { target.close() }

        let transport = InProcessTransport()
        let server = GRPCServer(transport: transport.server, services: [AlteringPeer(store: source, alteration: alteration)])
        let client = GRPCClient(transport: transport.client)
        var settings = PeerSettings(tlsDirectory: b.path)
        settings.staticPeers = [PeerSettings.StaticPeer(nodeID: "node-a", address: NetworkAddress(host: "192.0.2.1", port: 9821))]
        let directory = PeerDirectory(settings: settings, localNode: "node-b", connector: InProcessConnector(client: client))
        let fetcher = ReplicaFetcher(directory: directory, metrics: NoPeerMetrics(), logger: Logger(label: "test"), store: { target })

        let outcome: Result<Void, any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await server.serve() }
            group.addTask { try? await client.runConnections() }
            let outcome: Result<Void, any Error>
            do { outcome = .success(try await fetcher.ensureSnapshot(snapshot.id)) } catch { outcome = .failure(error) }
            server.beginGracefulShutdown()
            client.beginGracefulShutdown()
            return outcome
        }
        if alteration == .none {
            try outcome.get()
            let clone = try target.createVolume(name: "clone", size: 16 << 20, source: .snapshot(id: snapshot.id))
            let copy = try target.open(volumeID: clone.id)
            defer { try? copy.close() }
            var read = [UInt8](repeating: 0, count: 3 << 20)
            try read.withUnsafeMutableBytes { try copy.read(into: $0, at: 1 << 20) }
            #expect(read == Array(data[0..<(3 << 20)]))
        } else {
            #expect(throws: (any Error).self, "\(alteration) must be refused") { try outcome.get() }
            #expect(throws: (any Error).self, "no replica of an altered stream") { try target.replicaManifest(snapshotID: snapshot.id) }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: b.path + "/layers").filter { $0.hasPrefix("layer-") }
            #expect(leftovers.isEmpty, "layer files of a refused import: \(leftovers)")
        }
    }
}

/// Serves one store's snapshots as the real layer service does (1 MiB chunks, PeerChecksum),
/// altered as asked.
private struct AlteringPeer: Strata_Peer_V1_Peer.SimpleServiceProtocol {
    let store: BlockStore
    let alteration: PeerChunkIntegrityTests.Alteration

    func getSnapshot(request: Strata_Peer_V1_GetSnapshotRequest, context: ServerContext) async throws -> Strata_Peer_V1_SnapshotManifest {
        PeerWire.manifest(try store.replicaManifest(snapshotID: request.snapshotID), localNode: "node-a")
    }

    func readLayer(request: Strata_Peer_V1_ReadLayerRequest, response: RPCWriter<Strata_Peer_V1_LayerChunk>, context: ServerContext)
        async throws
    {
        let export = try store.exportLayer(snapshotID: request.snapshotID, layerUUID: request.layerUuid)
        var chunks: [Strata_Peer_V1_LayerChunk] = []
        for extent in try export.extents(maximumLength: 1 << 20) {
            var bytes = [UInt8](repeating: 0, count: extent.isZero ? 0 : Int(extent.length))
            try bytes.withUnsafeMutableBytes { try export.read(into: $0, at: extent.offset) }
            var chunk = Strata_Peer_V1_LayerChunk()
            chunk.extents = [.with { $0.offset = extent.offset; $0.length = extent.length; $0.zero = extent.isZero }]
            chunk.data = Data(bytes)
            chunk.sha256 = PeerChecksum.chunkDigest(extents: chunk.extents, data: chunk.data)
            chunks.append(chunk)
        }
        #expect(chunks.count >= 3)
        var digest = PeerChecksum.LayerDigest()
        for chunk in chunks { digest.add(chunkDigest: chunk.sha256) }
        chunks[chunks.count - 1].layerSha256 = digest.finalize()
        switch alteration {
        case .none: break
        case .flippedByte: chunks[1].data[4097] ^= 0x40
        case .movedExtent: chunks[1].extents[0].offset += 65536
        case .droppedChunk: chunks.remove(at: 1)
        case .wrongLayerDigest: chunks[chunks.count - 1].layerSha256[0] ^= 1
        }
        for chunk in chunks { try await response.write(chunk) }
    }

    func identify(request: Strata_Peer_V1_IdentifyRequest, context: ServerContext) async throws -> Strata_Peer_V1_IdentifyResponse {
        .with { $0.nodeID = "node-a" }
    }

    func prepareVolumeClone(request: Strata_Peer_V1_PrepareVolumeCloneRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_SnapshotManifest
    { throw RPCError(code: .unimplemented, message: "") }

    func releaseVolumeClone(request: Strata_Peer_V1_ReleaseVolumeCloneRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_ReleaseVolumeCloneResponse
    { throw RPCError(code: .unimplemented, message: "") }

    func placeSnapshot(request: Strata_Peer_V1_PlaceSnapshotRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_PlaceSnapshotResponse
    { throw RPCError(code: .unimplemented, message: "") }

    func snapshotDeleted(request: Strata_Peer_V1_SnapshotDeletedRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_SnapshotDeletedResponse
    { .init() }

    func locateVolume(request: Strata_Peer_V1_LocateVolumeRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_LocateVolumeResponse
    { throw RPCError(code: .notFound, message: "") }

    func forwardController(request: Strata_Peer_V1_ForwardedCall, context: ServerContext) async throws -> Strata_Peer_V1_ForwardedReply {
        throw RPCError(code: .unimplemented, message: "")
    }

    func handOverVolume(request: Strata_Peer_V1_HandOverRequest, context: ServerContext) async throws -> Strata_Peer_V1_HandOverResponse {
        throw RPCError(code: .unimplemented, message: "")
    }

    func releaseHandedOver(request: Strata_Peer_V1_ReleaseHandedOverRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_ReleaseHandedOverResponse
    { throw RPCError(code: .unimplemented, message: "") }

    func ownershipOffered(request: Strata_Peer_V1_OwnershipOfferedRequest, context: ServerContext) async throws
        -> Strata_Peer_V1_OwnershipOfferedResponse
    { throw RPCError(code: .unimplemented, message: "") }
}

private struct NoPeerMetrics: PeerMetricsRecorder {
    func recordPeerBytes(received: Int, sent: Int) {}
    func recordPeerFetch(result: String) {}
    func adjustPeerTransfers(_ direction: String, by delta: Double) {}
}
