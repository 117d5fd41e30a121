import BlockStore
import CSIValidation
import Peering

/// CreateVolume from a snapshot or volume of another node: its layers are fetched from a node
/// that holds them (see `ReplicaFetcher`), then the clone is made here as any local clone.
extension ControllerService {
    /// The size of `source`, fetching it from a peer when it is not here. For a volume of another
    /// node, also the hidden replica the clone is to be made from.
    func locate(_ source: VolumeSource, forVolumeNamed name: String, in store: BlockStore) async throws
        -> (size: UInt64, replicaOfVolume: String?)
    {
        do {
            return (try await BlockingWork.run { try sourceSizeOf(source, in: store) }, nil)
        } catch let error as StoreError where error.code == .notFound {
            guard let peers = context.peers else { throw error }
            // A retry of a clone already made answers with that clone.
            if let existing = try await BlockingWork.run({ try store.volume(named: name) }), existing.source == source {
                return (existing.size, nil)
            }
            switch source {
            case .snapshot(let id):
                try await peers.fetcher.ensureSnapshot(id)
                return (try await BlockingWork.run { try store.snapshot(id: id).size }, nil)
            case .volume(let id):
                let replicaID = try await peers.fetcher.fetchVolumeClone(id, requestName: "\(context.configuration.nodeID)/\(name)")
                return (try await BlockingWork.run { try store.replicaManifest(snapshotID: replicaID).size }, replicaID)
            }
        }
    }

    /// The origin may delete the hidden snapshot it made for this clone: the copy is here.
    func releaseOnOrigin(_ replicaID: String, store: BlockStore) {
        guard let peers = context.peers, let origin = try? store.replicaManifest(snapshotID: replicaID).originNode else { return }
        Task { await peers.fetcher.releaseVolumeClone(snapshotID: replicaID, origin: origin) }
    }
}
