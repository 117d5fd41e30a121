import CSIProto
import GRPCCore

/// ControllerPublish/Unpublish are not offered: a Strata volume is served by the node that
/// stages it, so there is nothing to attach, and the CSIDriver object says
/// `attachRequired: false`, with which Kubernetes never calls these. Advertising
/// PUBLISH_UNPUBLISH_VOLUME anyway made external-provisioner watch VolumeAttachments (issue 22)
/// and would let a CO believe an attach step guards the volume when none does. Live migration
/// of RWX Block volumes is driven node-side: NodeStage on the target while the source is still
/// staged, and the order of the NodeUnstage calls says which side won. The spec's answer for
/// an RPC a plugin does not offer is UNIMPLEMENTED, whatever the request holds.
extension ControllerService {
    func controllerPublishVolume(request: Csi_V1_ControllerPublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerPublishVolumeResponse {
        throw Self.noAttachStep("ControllerPublishVolume")
    }

    func controllerUnpublishVolume(request: Csi_V1_ControllerUnpublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerUnpublishVolumeResponse {
        throw Self.noAttachStep("ControllerUnpublishVolume")
    }

    private static func noAttachStep(_ method: String) -> RPCError {
        RPCError(code: .unimplemented, message: "\(method) is not offered (no PUBLISH_UNPUBLISH_VOLUME): Strata volumes need no attach step; the node that stages a volume serves it")
    }
}
