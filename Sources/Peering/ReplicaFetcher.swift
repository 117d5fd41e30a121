import BlockStore
import Foundation
import GRPCCore
import Logging
import PeerProto

/// Brings snapshots of other nodes here: asks peers who holds one, fetches the layers of its
/// chain this store lacks from the first holder that answers (the next one if that fails), and
/// commits the replica. One fetch per snapshot at a time: every caller asking for it meanwhile
/// (concurrent clones, a CreateVolume retried after the provisioner's timeout) waits for that
/// same fetch, which runs on in its own task if the caller that started it goes away.
public actor ReplicaFetcher {
    public let directory: PeerDirectory
    private let metrics: any PeerMetricsRecorder
    private let logger: Logger
    private let store: @Sendable () throws -> BlockStore
    private var inFlight: [String: Task<String, any Error>] = [:]

    public init(directory: PeerDirectory, metrics: any PeerMetricsRecorder, logger: Logger, store: @escaping @Sendable () throws -> BlockStore) {
        self.directory = directory
        self.metrics = metrics
        self.logger = logger
        self.store = store
    }

    public nonisolated var localNode: String { directory.localNode }

    /// Makes sure snapshot `id` is held here.
    public func ensureSnapshot(_ id: String) async throws {
        if let store = try? store(), (try? await BlockingWork.run({ try store.replicaManifest(snapshotID: id) })) != nil { return }
        _ = try await singleFlight("snapshot/\(id)") { fetcher in
            try await fetcher.fetch(what: "snapshot \(id)") { client in
                try await client.getSnapshot(.with { $0.snapshotID = id }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            }
        }
    }

    /// Fetches a hidden snapshot of volume `volumeID` of another node, made for the clone
    /// `requestName`; returns its id (held here as a hidden replica).
    public func fetchVolumeClone(_ volumeID: String, requestName: String) async throws -> String {
        try await singleFlight("volume/\(volumeID)/\(requestName)") { fetcher in
            try await fetcher.fetch(what: "volume \(volumeID)") { client in
                try await client.prepareVolumeClone(
                    .with { $0.volumeID = volumeID; $0.requestName = requestName },
                    options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            }
        }
    }

    /// Copies the hidden snapshot `owner` makes for this node's takeover of `volumeID` (the last
    /// one, after which the owner takes no more writes, when `freeze`); answers what the owner
    /// offered. The copy is a hidden replica here, committed before this returns.
    public func fetchHandOver(of volumeID: String, from owner: PeerEndpoint, freeze: Bool) async throws -> HandOverOffer {
        let node = localNode
        return try await directory.connector.withClient(owner) { client in
            let answer = try await client.handOverVolume(
                .with { $0.volumeID = volumeID; $0.nodeID = node; $0.freeze = freeze },
                options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            let manifest = PeerWire.manifest(answer.snapshot)
            try await self.copy(manifest, from: owner, client: client)
            return HandOverOffer(manifest: manifest, volumeName: answer.volumeName, epoch: answer.epoch, parameters: answer.parameters)
        }
    }

    /// Tells the node a hidden snapshot came from that its copy is here (best effort: a left-over
    /// one costs a catalog row there, its layer stays the volume's own).
    public func releaseVolumeClone(snapshotID: String, origin: String) async {
        for endpoint in await directory.endpoints() where endpoint.nodeID == origin {
            let released: Void? = try? await directory.connector.withClient(endpoint) { client in
                _ = try await client.releaseVolumeClone(
                    .with { $0.snapshotID = snapshotID }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            }
            if released != nil { return }
        }
        logger.warning("could not release hidden snapshot \(snapshotID) on \(origin)")
    }

    private func singleFlight(_ key: String, _ work: @escaping @Sendable (ReplicaFetcher) async throws -> String) async throws -> String {
        if let running = inFlight[key] { return try await running.value }
        let task = Task<String, any Error> {
            do {
                let value = try await work(self)
                self.finished(key)
                return value
            } catch {
                self.finished(key)
                throw error
            }
        }
        inFlight[key] = task
        return try await task.value
    }

    private func finished(_ key: String) { inFlight[key] = nil }

    /// Asks every peer in turn for `what` (`ask` answers its manifest) and copies it from the
    /// first that has it. NOT_FOUND when every peer answered that it has none; UNAVAILABLE when
    /// some could not be asked or the copy failed everywhere.
    private func fetch(
        what: String, ask: @escaping @Sendable (any Strata_Peer_V1_Peer.ClientProtocol) async throws
            -> Strata_Peer_V1_SnapshotManifest
    ) async throws -> String {
        let endpoints = await directory.endpoints()
        var failures: [String] = []
        var everyPeerLacksIt = true
        for endpoint in endpoints {
            do {
                let snapshotID = try await directory.connector.withClient(endpoint) { client in
                    let manifest = PeerWire.manifest(try await ask(client))
                    try await copy(manifest, from: endpoint, client: client)
                    return manifest.snapshotID
                }
                metrics.recordPeerFetch(result: "ok")
                return snapshotID
            } catch let error as RPCError where error.code == .notFound {
                failures.append("\(endpoint): not held there")
            } catch {
                everyPeerLacksIt = false
                failures.append("\(endpoint): \(error)")
                logger.warning("fetching \(what) from \(endpoint) failed", metadata: ["error": "\(error)"])
            }
        }
        metrics.recordPeerFetch(result: "failed")
        let tried = failures.isEmpty ? "no peer is configured" : failures.joined(separator: "; ")
        if everyPeerLacksIt && !endpoints.isEmpty {
            throw PeeringError.notFound("\(what) is not on node \(localNode) nor on any peer (\(tried))")
        }
        throw PeeringError.unavailable("\(what) is not on node \(localNode) and no node holding it could be reached: \(tried)")
    }

    /// Copies the layers of `manifest` this store lacks, verifying each chunk and each layer,
    /// and commits the replica; anything short of that is discarded.
    private nonisolated func copy(_ manifest: ReplicaManifest, from endpoint: PeerEndpoint,
                      client: any Strata_Peer_V1_Peer.ClientProtocol) async throws {
        let store = try self.store()
        let origin = manifest.originNode ?? endpoint.nodeID ?? endpoint.host
        guard let replica = try await BlockingWork.run({ try store.beginReplicaImport(manifest, originNode: origin) }) else { return }
        metrics.adjustPeerTransfers("receive", by: 1)
        defer { metrics.adjustPeerTransfers("receive", by: -1) }
        logger.info("fetching snapshot \(manifest.snapshotID) from \(endpoint)", metadata: [
            "layers": "\(replica.missingLayers.count)", "bytes": "\(replica.bytesToFetch)",
        ])
        do {
            for layer in replica.missingLayers {
                try await BlockingWork.run { try replica.beginLayer(layer.uuid) }
                let request = Strata_Peer_V1_ReadLayerRequest.with { $0.snapshotID = manifest.snapshotID; $0.layerUuid = layer.uuid }
                try await client.readLayer(request, options: PeerClientPool.options(timeout: PeerClientPool.streamTimeout)) { response in
                    var digest = PeerChecksum.LayerDigest()
                    var complete = false
                    // Each chunk is verified and written on Dispatch's threads while the next ones
                    // arrive, at most `writeDepth` behind; writes go in order, one at a time (an
                    // import is not for concurrent use), and a chunk is written only once it and
                    // every chunk before it passed. Every task ends before this returns, so
                    // nothing writes into a discarded import.
                    var writes: [Task<Void, any Error>] = []
                    do {
                        for try await chunk in response.messages {
                            guard !complete else { throw RPCError(code: .dataLoss, message: "a chunk came after the last one") }
                            // The digest the chunk claims; its own task checks it before writing.
                            digest.add(chunkDigest: chunk.sha256)
                            let previous = writes.last
                            writes.append(Task {
                                try await BlockingWork.run { try Self.verify(chunk, layer: layer.uuid) }
                                try await previous?.value
                                try await BlockingWork.run { try Self.write(chunk, layer: layer.uuid, into: replica) }
                            })
                            if writes.count > Self.writeDepth { try await writes.removeFirst().value }
                            self.metrics.recordPeerBytes(received: chunk.data.count, sent: 0)
                            if !chunk.layerSha256.isEmpty {
                                guard digest.finalize() == chunk.layerSha256 else {
                                    throw RPCError(code: .dataLoss, message: "layer \(layer.uuid) failed its checksum")
                                }
                                complete = true
                            }
                        }
                        for write in writes { try await write.value }
                    } catch {
                        for write in writes { _ = await write.result }
                        throw error
                    }
                    guard complete else { throw RPCError(code: .dataLoss, message: "the stream of layer \(layer.uuid) ended early") }
                }
                try await BlockingWork.run { try replica.finishLayer(layer.uuid) }
            }
            _ = try await BlockingWork.run { try replica.commit() }
        } catch {
            replica.discard()
            throw error
        }
    }

    /// Chunks received but not yet written (each holds up to 1 MiB in memory).
    static let writeDepth = 4

    private static func verify(_ chunk: Strata_Peer_V1_LayerChunk, layer: String) throws {
        guard PeerChecksum.chunkDigest(extents: chunk.extents, data: chunk.data) == chunk.sha256 else {
            throw RPCError(code: .dataLoss, message: "a chunk of layer \(layer) failed its checksum")
        }
    }

    private static func write(_ chunk: Strata_Peer_V1_LayerChunk, layer: String, into replica: ReplicaImport) throws {
        try chunk.data.withUnsafeBytes { data in
            var position = 0
            for wire in chunk.extents {
                let extent = LayerExtent(offset: wire.offset, length: wire.length, isZero: wire.zero)
                if extent.isZero {
                    try replica.write(layer: layer, extent: extent, bytes: UnsafeRawBufferPointer(start: nil, count: 0))
                    continue
                }
                guard extent.length <= UInt64(data.count - position) else {
                    throw RPCError(code: .dataLoss, message: "a chunk of layer \(layer) is shorter than its extents")
                }
                let length = Int(extent.length)
                try replica.write(layer: layer, extent: extent, bytes: UnsafeRawBufferPointer(rebasing: data[position..<position + length]))
                position += length
            }
            guard position == data.count else { throw RPCError(code: .dataLoss, message: "a chunk of layer \(layer) has stray bytes") }
        }
    }
}
