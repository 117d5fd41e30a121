import BlockStore
import CSIProto

/// Where a ReadWriteMany volume lives and who else uses it, worded once for every report that
/// says it (ListVolumes, ControllerGetVolume, NodeGetVolumeStats), so that an admin reading any
/// of them learns the same facts: the owner node and its ownership epoch, the nodes that stage
/// the volume and which of them reach it remotely, and whether it is moving to another node.
/// Single-node volumes live where they were made and say nothing more than their health.
struct VolumePlacement: Equatable {
    /// The node holding the volume's writable head.
    var owner: String
    var epoch: UInt64
    /// Whether the owner stages the volume itself.
    var stagedOnOwner: Bool
    /// Other nodes staging it, whose I/O the owner serves over the peer connection.
    var remoteStagers: [String]
    /// The node taking the volume over: the owner's head is frozen until that node holds it.
    var movingTo: String?

    /// The placement of a volume of this node's store.
    init(_ volume: Volume, owner: String, stagedOnOwner: Bool, remoteStagers: [String]) {
        self.owner = owner
        epoch = volume.epoch
        self.stagedOnOwner = stagedOnOwner
        self.remoteStagers = remoteStagers
        movingTo = volume.movedTo
    }

    /// What the owner says of the volume (ListVolumes and ControllerGetVolume).
    var ownerMessage: String {
        if let movingTo {
            return "volume is moving from node \(owner) to node \(movingTo) (ownership epoch \(epoch)): frozen on \(owner), "
                + "which takes no more writes for it; its copy there is deleted once \(movingTo) holds it"
        }
        var staged = stagedOnOwner ? [owner] : []
        staged += remoteStagers.map { "\($0) (served remotely from \(owner))" }
        return "volume is healthy; lives on node \(owner) (ownership epoch \(epoch)); "
            + (staged.isEmpty ? "staged on no node" : "staged on " + staged.joined(separator: " and "))
    }

    var condition: Csi_V1_VolumeCondition {
        .with {
            $0.abnormal = false
            $0.message = ownerMessage
        }
    }

    /// What NodeGetVolumeStats says on the owner while it stages the volume.
    var stagedHereMessage: String {
        let others = remoteStagers.isEmpty ? "" : "; also staged on \(remoteStagers.joined(separator: " and ")), which reaches it through this node"
        return "volume is healthy; lives here on node \(owner) (ownership epoch \(epoch))\(others)"
    }

    /// What NodeGetVolumeStats says on a node that stages a volume of another node.
    static func remoteMessage(owner: String, epoch: UInt64, takingOver: Bool) -> String {
        "volume is healthy; served from its owner, node \(owner) (ownership epoch \(epoch))"
            + (takingOver ? "; ownership is moving to this node" : "")
    }
}
