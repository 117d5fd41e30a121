import AdminProto
import BlockStore

/// Where ReadWriteMany volumes live, for `strata tree`, `ls` and `df`: the placement of the
/// volumes this store owns (from the catalog, read in the same transaction as the rest of the
/// answer) and the volumes this node stages from other nodes (from the node's staging
/// registry: the store holds no layer of them).
extension AdminService {
    /// The placement of every multi-node volume of `topology`, by volume id.
    func placements(in topology: StoreTopology) -> [String: Strata_Admin_V1_Placement] {
        var placements: [String: Strata_Admin_V1_Placement] = [:]
        for head in topology.heads where head.volume.multiNode {
            placements[head.volume.id] = .with {
                $0.multiNode = true
                $0.epoch = Int64(clamping: head.volume.epoch)
                $0.stagedHere = context.stager?.isStaged(head.volume.id) == true
                $0.stagedOn = topology.remoteStagers[head.volume.id] ?? []
                $0.movingTo = head.volume.movedTo ?? ""
            }
        }
        return placements
    }

    /// Volumes staged on this node whose owner is another node, by id.
    func remoteVolumes() -> [Strata_Admin_V1_RemoteVolume] {
        guard let stager = context.stager else { return [] }
        return stager.registry.all.compactMap { record -> Strata_Admin_V1_RemoteVolume? in
            guard let owner = record.remoteOwner else { return nil }
            return .with {
                $0.id = record.volumeID
                $0.ownerNode = owner.node
                $0.epoch = Int64(clamping: owner.epoch)
                $0.sizeBytes = Int64(clamping: owner.size)
                $0.takingOver = stager.isTakingOver(record.volumeID)
                $0.problem = stager.backendProblem(of: record.volumeID) ?? ""
            }
        }.sorted { $0.id < $1.id }
    }
}
