import BlockStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Logging
import PeerProto
import StrataTestSupport
import Testing
@testable import Peering

/// The receiver's checks of a layer stream, against a peer that alters what it sends: a chunk
/// with a flipped byte, a chunk whose extent moved, a dropped chunk, a wrong layer digest. Each
/// must be refused (DATA_LOSS from the fetch) and leave no replica; the same stream unaltered
/// commits byte-exact. In process (no root, no network): the checks are the fetcher's, whatever
/// the transport.
@Suite("Peer chunk integrity", .blockingTolerant)
struct PeerChunkIntegrityTests {
    enum Alteration: String, CaseIterable, Sendable {
        case none, flippedByte, movedExtent, droppedChunk, wrongLayerDigest
        // Lies told consistently: the chunk's checksum and the layer's digest are computed over
        // the altered chunks, so only the receiver's own checks of the extents can refuse them.
        case shortChunk, misalignedExtent, duplicatedChunk, outOfRangeExtent

        /// The checksums describe the altered stream.
        var resealed: Bool {
            switch self {
            case .shortChunk, .misalignedExtent, .duplicatedChunk, .outOfRangeExtent: true
            default: false
            }
        }
    }

    @Test("An altered layer stream is refused and leaves nothing; the same stream unaltered commits", arguments: Alteration.allCases)
    func alteredStreamsAreRefused(_ alteration: Alteration) async throws {
        let golden = try GoldenSnapshot()
        defer { golden.close() }
        let (outcome, target) = try await golden.fetch(from: [alteration])
        defer { target.close() }
        if alteration == .none {
            try outcome.get()
            try golden.expectCopy(in: target)
        } else {
            #expect(throws: (any Error).self, "\(alteration) must be refused") { try outcome.get() }
            #expect(throws: (any Error).self, "no replica of an altered stream") { try target.replicaManifest(snapshotID: golden.snapshotID) }
            #expect(try golden.layerFiles(of: target).isEmpty, "layer files of a refused import")
        }
    }

    @Test("A holder that lies is refused, the snapshot comes from an honest holder, and nothing of the lie is left",
          arguments: [Alteration.flippedByte, .duplicatedChunk, .outOfRangeExtent])
    func honestHolderAfterALyingOne(_ lie: Alteration) async throws {
        let golden = try GoldenSnapshot()
        defer { golden.close() }
        let (outcome, target) = try await golden.fetch(from: [lie, .none])
        defer { target.close() }
        try outcome.get()
        let manifest = try target.replicaManifest(snapshotID: golden.snapshotID)
        let files = try golden.layerFiles(of: target)
        let layers = Set(files.map { $0.split(separator: ".").first.map(String.init) ?? $0 })
        #expect(layers.count == manifest.layers.count, "only the honest copy's layers are here: \(files)")
        try golden.expectCopy(in: target)
    }
}

/// A snapshot of 5 MiB of random data in two runs (several 1 MiB chunks), in a store of its own,
/// fetched into a new store from in-process holders that alter what they send as asked.
private final class GoldenSnapshot: Sendable {
    let source: TemporaryDirectory
    let receiver: TemporaryDirectory
    let store: BlockStore
    let snapshotID: String
    let data: [UInt8]

    init() throws {
        source = try TemporaryDirectory()
        receiver = try TemporaryDirectory()
        store = try BlockStore(directory: source.path, options: StoreOptions(backgroundFlatten: false))
        let volume = try store.createVolume(name: "golden", size: 16 << 20, clusterSize: 65536)
        let handle = try store.open(volumeID: volume.id)
        // Filled a word at a time: byte by byte, a debug build spent seconds here on a
        // cooperative thread per case, long enough (with every case at once in a whole run) to
        // starve the in-process peer past its call deadline.
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: 5 << 20)
        bytes.withUnsafeMutableBytes { raw in
            for offset in stride(from: 0, to: raw.count, by: 8) { raw.storeBytes(of: generator.next(), toByteOffset: offset, as: UInt64.self) }
        }
        data = bytes
        try data.withUnsafeBytes { try handle.write(UnsafeRawBufferPointer(rebasing: $0[0..<(3 << 20)]), at: 1 << 20) }
        try data.withUnsafeBytes { try handle.write(UnsafeRawBufferPointer(rebasing: $0[(3 << 20)...]), at: 8 << 20) }
        try handle.flush()
        try handle.close()
        snapshotID = try store.createSnapshot(name: "golden-snap", of: volume.id).id
    }

    func close() { store.close() }

    /// Fetches the snapshot into a new store from holders asked in this order, each altering
    /// its stream as given; answers how the fetch ended and the receiving store.
    func fetch(from holders: [PeerChunkIntegrityTests.Alteration]) async throws -> (Result<Void, any Error>, BlockStore) {
        let target = try BlockStore(directory: receiver.path, options: StoreOptions(backgroundFlatten: false))
        let hosts = holders.indices.map { "192.0.2.\($0 + 1)" }
        let transports = holders.map { _ in InProcessTransport() }
        let servers = zip(transports, holders).map { transport, alteration in
            GRPCServer(transport: transport.server, services: [AlteringPeer(store: store, alteration: alteration)])
        }
        let clients = transports.map { GRPCClient(transport: $0.client) }
        var settings = PeerSettings(tlsDirectory: receiver.path)
        settings.staticPeers = hosts.enumerated().map { index, host in
            PeerSettings.StaticPeer(nodeID: "holder-\(index)", address: NetworkAddress(host: host, port: 9821))
        }
        let directory = PeerDirectory(
            settings: settings, localNode: "node-b",
            connector: InProcessConnector(clientsByHost: Dictionary(uniqueKeysWithValues: zip(hosts, clients))))
        let fetcher = ReplicaFetcher(directory: directory, metrics: NoPeerMetrics(), logger: Logger(label: "test"), store: { target })
        let snapshotID = self.snapshotID
        let outcome: Result<Void, any Error> = await withTaskGroup(of: Void.self) { group in
            for server in servers { group.addTask { try? await server.serve() } }
            for client in clients { group.addTask { try? await client.runConnections() } }
            let outcome: Result<Void, any Error>
            do { outcome = .success(try await fetcher.ensureSnapshot(snapshotID)) } catch { outcome = .failure(error) }
            for server in servers { server.beginGracefulShutdown() }
            for client in clients { client.beginGracefulShutdown() }
            return outcome
        }
        return (outcome, target)
    }

    /// A clone of the copy in `target` reads back what was written.
    func expectCopy(in target: BlockStore) throws {
        let clone = try target.createVolume(name: "clone", size: 16 << 20, source: .snapshot(id: snapshotID))
        let copy = try target.open(volumeID: clone.id)
        defer { try? copy.close() }
        var read = [UInt8](repeating: 0, count: 5 << 20)
        try read.withUnsafeMutableBytes { try copy.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<(3 << 20)]), at: 1 << 20) }
        try read.withUnsafeMutableBytes { try copy.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[(3 << 20)...]), at: 8 << 20) }
        #expect(read == data, "the copy holds the snapshot's bytes")
    }

    func layerFiles(of target: BlockStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: receiver.path + "/layers").filter { $0.hasPrefix("layer-") }
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
        case .shortChunk: chunks[1].data.removeLast(512)
        case .misalignedExtent: chunks[1].extents[0].offset += 512
        case .duplicatedChunk: chunks.insert(chunks[1], at: 2)
        case .outOfRangeExtent: chunks[1].extents[0].offset = 1 << 40
        }
        if alteration.resealed {
            var resealed = PeerChecksum.LayerDigest()
            for index in chunks.indices {
                chunks[index].sha256 = PeerChecksum.chunkDigest(extents: chunks[index].extents, data: chunks[index].data)
                chunks[index].layerSha256 = Data()
                resealed.add(chunkDigest: chunks[index].sha256)
            }
            chunks[chunks.count - 1].layerSha256 = resealed.finalize()
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
