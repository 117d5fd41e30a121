import BlockStore
import Foundation
import GRPCCore
import PeerProto

/// The peer protocol's server: what another node may read from this one. Only frozen layers of
/// snapshots held here travel (taken here, hidden ones made for a peer's clone, complete
/// replicas); a malformed id is INVALID_ARGUMENT, anything else not held (a volume id, a
/// writable head, a layer outside the snapshot's chain) is NOT_FOUND, which tells nothing more.
struct PeerService: Strata_Peer_V1_Peer.SimpleServiceProtocol {
    let host: any HandOverHost
    let sessions: RemoteSessions
    let metrics: any PeerMetricsRecorder
    let sends: SendSlots
    let fetcher: ReplicaFetcher
    let janitor: ReplicaJanitor
    let sendBytesPerSecond: Int?

    /// Bytes of layer data per chunk.
    static let chunkBytes = 1 << 20
    /// Zero extents per chunk (they carry no bytes, but each costs a few in the message).
    static let chunkExtents = 4096
    /// Chunks read ahead of the one being sent (each holds up to `chunkBytes` in memory).
    static let readAhead = 2

    func identify(request: Strata_Peer_V1_IdentifyRequest, context _: ServerContext) async throws -> Strata_Peer_V1_IdentifyResponse {
        .with { $0.nodeID = host.nodeID }
    }

    func getSnapshot(request: Strata_Peer_V1_GetSnapshotRequest, context _: ServerContext) async throws -> Strata_Peer_V1_SnapshotManifest {
        try PeerRequestRules.requireID(request.snapshotID, field: "snapshot_id")
        let store = try host.store()
        let manifest = try await BlockingWork.run { try store.replicaManifest(snapshotID: request.snapshotID) }
        return PeerWire.manifest(manifest, localNode: host.nodeID)
    }

    func prepareVolumeClone(request: Strata_Peer_V1_PrepareVolumeCloneRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_SnapshotManifest
    {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        try PeerRequestRules.requireName(request.requestName)
        let store = try host.store()
        let name = "peer-clone:" + request.requestName
        let manifest = try await host.withVolumeQuiesced(request.volumeID) {
            let snapshot = try store.createPeerSnapshot(name: name, of: request.volumeID)
            return try store.replicaManifest(snapshotID: snapshot.id)
        }
        return PeerWire.manifest(manifest, localNode: host.nodeID)
    }

    func releaseVolumeClone(request: Strata_Peer_V1_ReleaseVolumeCloneRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_ReleaseVolumeCloneResponse
    {
        try PeerRequestRules.requireID(request.snapshotID, field: "snapshot_id")
        let store = try host.store()
        try await BlockingWork.run { try store.releasePeerSnapshot(id: request.snapshotID) }
        return .init()
    }

    func placeSnapshot(request: Strata_Peer_V1_PlaceSnapshotRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_PlaceSnapshotResponse
    {
        try PeerRequestRules.requireID(request.snapshotID, field: "snapshot_id")
        try await fetcher.ensureSnapshot(request.snapshotID)
        return .init()
    }

    func snapshotDeleted(request: Strata_Peer_V1_SnapshotDeletedRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_SnapshotDeletedResponse
    {
        try PeerRequestRules.requireID(request.snapshotID, field: "snapshot_id")
        // Only a hint: the copy is dropped once its origin itself answers that it has none.
        Task { [janitor] in await janitor.check(snapshotID: request.snapshotID) }
        return .init()
    }

    func locateVolume(request: Strata_Peer_V1_LocateVolumeRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_LocateVolumeResponse
    {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        let store = try host.store()
        let volume: Volume
        do { volume = try await BlockingWork.run { try store.volume(id: request.volumeID) } } catch let error as StoreError where error.code == .notFound {
            throw RPCError(code: .notFound, message: "volume \(request.volumeID) does not live on node \(host.nodeID)")
        }
        if let movedTo = volume.movedTo {
            // Neither here nor there yet: whoever asks retries (it is never "nowhere").
            throw RPCError(code: .unavailable, message: "volume \(request.volumeID) is moving from node \(host.nodeID) to node \(movedTo)")
        }
        return .with {
            $0.ownerNode = host.nodeID
            $0.epoch = volume.epoch
            $0.sizeBytes = volume.size
            $0.multiNode = volume.multiNode
        }
    }

    func forwardController(request: Strata_Peer_V1_ForwardedCall, context _: ServerContext) async throws -> Strata_Peer_V1_ForwardedReply {
        guard !request.method.isEmpty, request.method.utf8.count <= 64, request.method.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x7A }) else {
            throw RPCError(code: .invalidArgument, message: "method is malformed")
        }
        let response = try await host.handleForwardedCall(method: request.method, request: Array(request.request))
        return .with { $0.response = Data(response) }
    }

    func handOverVolume(request: Strata_Peer_V1_HandOverRequest, context _: ServerContext) async throws -> Strata_Peer_V1_HandOverResponse {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(request.nodeID)
        let offer = try await host.handOver(request.volumeID, to: request.nodeID, freeze: request.freeze)
        // A frozen volume's epoch rose: remote I/O at the old one is refused from now on.
        if request.freeze { sessions.refresh(request.volumeID, host: host) }
        return .with {
            $0.snapshot = PeerWire.manifest(offer.manifest, localNode: host.nodeID)
            $0.volumeName = offer.volumeName
            $0.epoch = offer.epoch
            $0.parameters = offer.parameters
        }
    }

    func releaseHandedOver(request: Strata_Peer_V1_ReleaseHandedOverRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_ReleaseHandedOverResponse
    {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(request.nodeID)
        try await host.releaseHandedOver(request.volumeID, to: request.nodeID) { [host, sessions] in
            sessions.refresh(request.volumeID, host: host)
        }
        return .init()
    }

    func ownershipOffered(request: Strata_Peer_V1_OwnershipOfferedRequest, context _: ServerContext) async throws
        -> Strata_Peer_V1_OwnershipOfferedResponse
    {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(request.ownerNode)
        host.ownershipOffered(request.volumeID, by: request.ownerNode)
        return .init()
    }

    func readLayer(request: Strata_Peer_V1_ReadLayerRequest, response: RPCWriter<Strata_Peer_V1_LayerChunk>, context _: ServerContext)
        async throws
    {
        try PeerRequestRules.requireID(request.snapshotID, field: "snapshot_id")
        try PeerRequestRules.requireID(request.layerUuid, field: "layer_uuid")
        let store = try host.store()
        let export = try await BlockingWork.run { try store.exportLayer(snapshotID: request.snapshotID, layerUUID: request.layerUuid) }
        await sends.acquire()
        metrics.adjustPeerTransfers("send", by: 1)
        defer {
            metrics.adjustPeerTransfers("send", by: -1)
            Task { await sends.release() }
        }
        let extents = try await BlockingWork.run { try export.extents(maximumLength: UInt64(Self.chunkBytes)) }
        let batches = Self.batches(of: extents)
        var layerDigest = PeerChecksum.LayerDigest()
        var sent = 0
        let started = ContinuousClock.now
        // Chunks are read and checksummed on Dispatch's threads, `readAhead` of them ahead of the
        // one on the wire, so the disk, the hash and the connection's TLS work at once.
        let prepare = { (index: Int) in Task { try await BlockingWork.run { try Self.chunk(batches[index], from: export) } } }
        var ready: [Task<Strata_Peer_V1_LayerChunk, any Error>] = []
        var prepared = 0
        for index in batches.indices {
            while prepared < batches.count, prepared <= index + Self.readAhead {
                ready.append(prepare(prepared))
                prepared += 1
            }
            var chunk = try await ready.removeFirst().value
            layerDigest.add(chunkDigest: chunk.sha256)
            if index == batches.count - 1 { chunk.layerSha256 = layerDigest.finalize() }
            let bytes = chunk.data.count
            try await response.write(chunk)
            metrics.recordPeerBytes(received: 0, sent: bytes)
            sent += bytes
            if let rate = sendBytesPerSecond {
                let due = started + .milliseconds(Int64(sent) * 1000 / Int64(rate))
                if due > ContinuousClock.now { try await Task.sleep(until: due) }
            }
        }
    }

    /// Extents grouped into chunks of at most `chunkBytes` of data and `chunkExtents` extents;
    /// one empty chunk for a layer that holds nothing (it still carries the layer's digest).
    private static func batches(of extents: [LayerExtent]) -> [(extents: [LayerExtent], bytes: Int)] {
        var batches: [(extents: [LayerExtent], bytes: Int)] = []
        var index = 0
        repeat {
            var batch: [LayerExtent] = []
            var bytes = 0
            while index < extents.count, batch.count < chunkExtents {
                let length = extents[index].isZero ? 0 : Int(extents[index].length)
                if !batch.isEmpty, bytes + length > chunkBytes { break }
                batch.append(extents[index])
                bytes += length
                index += 1
            }
            batches.append((batch, bytes))
        } while index < extents.count
        return batches
    }

    /// One chunk of the stream: the batch's extents, their bytes read straight into the buffer
    /// the message carries (not zero-filled first), and its checksum.
    private static func chunk(_ batch: (extents: [LayerExtent], bytes: Int), from export: LayerExport) throws -> Strata_Peer_V1_LayerChunk {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(batch.bytes, 1), alignment: 16)
        let data = Data(bytesNoCopy: memory.baseAddress!, count: batch.bytes, deallocator: .custom { pointer, _ in pointer.deallocate() })
        var position = 0
        for extent in batch.extents where !extent.isZero {
            let length = Int(extent.length)
            try export.read(into: UnsafeMutableRawBufferPointer(rebasing: memory[position..<position + length]), at: extent.offset)
            position += length
        }
        var chunk = Strata_Peer_V1_LayerChunk()
        chunk.extents = batch.extents.map { extent in .with { $0.offset = extent.offset; $0.length = extent.length; $0.zero = extent.isZero } }
        chunk.data = data
        chunk.sha256 = PeerChecksum.chunkDigest(extents: chunk.extents, data: data)
        return chunk
    }
}

/// Bounds the layer transfers this node serves at once; the rest wait their turn.
actor SendSlots {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = count }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            free += 1
        } else {
            waiters.removeFirst().resume()
        }
    }
}

/// What a peer request may carry before it reaches the store.
enum PeerRequestRules {
    /// Store ids and layer uuids: lowercase letters, digits and '-', at most 128 bytes. A '/',
    /// a '.' or anything else is refused here, before any lookup.
    static func requireID(_ id: String, field: String) throws {
        let allowed = id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }
        guard !id.isEmpty, id.utf8.count <= 128, allowed else {
            throw RPCError(code: .invalidArgument, message: "\(field) is malformed")
        }
    }

    /// A node id as the asking node gives it: 1–256 bytes without control characters.
    static func requireNode(_ node: String) throws {
        guard !node.isEmpty, node.utf8.count <= 256, !node.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw RPCError(code: .invalidArgument, message: "node_id must be 1–256 bytes without control characters")
        }
    }

    static func requireName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 512, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw RPCError(code: .invalidArgument, message: "request_name must be 1–512 bytes without control characters")
        }
    }
}

/// Manifests between the store and the wire.
enum PeerWire {
    static func manifest(_ manifest: ReplicaManifest, localNode: String) -> Strata_Peer_V1_SnapshotManifest {
        .with { wire in
            wire.snapshotID = manifest.snapshotID
            wire.sourceVolumeID = manifest.sourceVolumeID
            wire.sizeBytes = manifest.size
            wire.clusterSize = manifest.clusterSize
            wire.hidden = manifest.hidden
            wire.originNode = manifest.originNode ?? localNode
            wire.layers = manifest.layers.map { layer in .with { $0.uuid = layer.uuid; $0.allocatedBytes = layer.allocatedBytes } }
        }
    }

    static func manifest(_ wire: Strata_Peer_V1_SnapshotManifest) -> ReplicaManifest {
        ReplicaManifest(
            snapshotID: wire.snapshotID, sourceVolumeID: wire.sourceVolumeID, size: wire.sizeBytes, clusterSize: wire.clusterSize,
            hidden: wire.hidden, originNode: wire.originNode.isEmpty ? nil : wire.originNode,
            layers: wire.layers.map { LayerDescriptor(uuid: $0.uuid, allocatedBytes: $0.allocatedBytes) })
    }
}
