import CSIProto
import CSIValidation
import GRPCCore
import NodeHost
import Peering

/// ControllerPublish/Unpublish: Strata volumes live on one node and need no attach, so
/// publishing records which node may use a volume and how; only this controller's node can
/// have it. Deployments set `attachRequired: false` and never call these; they are here for
/// COs and tools that attach regardless.
extension ControllerService {
    func controllerPublishVolume(request: Csi_V1_ControllerPublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerPublishVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        guard !request.nodeID.isEmpty else { throw CSIError.invalidArgument("node_id is required") }
        guard request.hasVolumeCapability else { throw CSIError.invalidArgument("volume_capability is required") }
        try VolumeCapabilityRules.validate([request.volumeCapability])
        let store = try context.store()
        let readOnly = request.readonly || VolumeCapabilityRules.isReadOnly(request.volumeCapability)
        try await context.locks.withLocks([LockKey.volume(request.volumeID)]) {
            try await BlockingWork.run {
                _ = try store.volume(id: request.volumeID)
                guard request.nodeID == context.configuration.nodeID else {
                    throw CSIError.notFound("node \(RequestFields.quoted(request.nodeID)) is unknown here: volumes live on the node that created them (\(context.configuration.nodeID))")
                }
                let limit = try NodeLimits.maximumVolumes(attacher: LoopAttacher(), staged: 0)
                let published = publications.all.filter { $0.nodeID == request.nodeID }.count
                try publications.update(request.volumeID) { publication in
                    guard publication != nil || published < limit else {
                        throw CSIError.resourceExhausted("node \(request.nodeID) already has \(published) volumes published, its maximum")
                    }
                    if let existing = publication {
                        guard existing.readOnly == readOnly else {
                            throw CSIError.alreadyExists("volume \(request.volumeID) is already published to \(existing.nodeID) with readonly=\(existing.readOnly)")
                        }
                        return
                    }
                    publication = ControllerPublication(nodeID: request.nodeID, readOnly: readOnly)
                }
            }
        }
        return .init()
    }

    func controllerUnpublishVolume(request: Csi_V1_ControllerUnpublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerUnpublishVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        try await context.locks.withLocks([LockKey.volume(request.volumeID)]) {
            try await BlockingWork.run {
                // Unpublishing what is not published (or not there) succeeds: the CO may be retrying.
                try publications.update(request.volumeID) { publication in
                    if request.nodeID.isEmpty || publication?.nodeID == request.nodeID { publication = nil }
                }
            }
        }
        return .init()
    }
}
