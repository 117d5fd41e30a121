import BlockStore
import CSIProto
import Foundation
import SwiftProtobuf

/// Store objects as CSI messages.
extension DriverContext {
    func wireVolume(_ volume: Volume) -> Csi_V1_Volume {
        .with {
            $0.volumeID = volume.id
            $0.capacityBytes = Int64(clamping: volume.size)
            // A multi-node volume is reachable from every node (its owner serves the others):
            // its PersistentVolume's node affinity admits every node with peers, so the VM using
            // it may be scheduled, and migrated, anywhere.
            $0.accessibleTopology = [volume.multiNode ? multiNodeTopology : topology]
            if let source = volume.source { $0.contentSource = Self.wireSource(source) }
        }
    }

    static func wireSource(_ source: VolumeSource) -> Csi_V1_VolumeContentSource {
        switch source {
        case .snapshot(let id): .with { $0.snapshot = .with { $0.snapshotID = id } }
        case .volume(let id): .with { $0.volume = .with { $0.volumeID = id } }
        }
    }

    static func wireSnapshot(_ snapshot: Snapshot, groupID: String? = nil) -> Csi_V1_Snapshot {
        .with {
            $0.snapshotID = snapshot.id
            $0.sourceVolumeID = snapshot.sourceVolumeID
            $0.sizeBytes = Int64(clamping: snapshot.size)
            $0.creationTime = Google_Protobuf_Timestamp(date: snapshot.createdAt)
            // Snapshots are metadata: usable the moment they exist.
            $0.readyToUse = true
            if let group = groupID ?? snapshot.groupID { $0.groupSnapshotID = group }
        }
    }
}
