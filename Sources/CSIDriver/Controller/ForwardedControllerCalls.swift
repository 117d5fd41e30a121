import CSIProto
import CSIValidation
import Foundation
import GRPCCore
import Peering
import PeerProto
import SwiftProtobuf

/// Controller calls about a volume whose owner is another node. A multi-node volume is
/// accessible from every node, so every node's sidecars may act on it (in distributed
/// provisioning each node's provisioner deletes the PersistentVolumes accessible from it; the
/// snapshot-controller hands a snapshot to the first node the PV admits): a node that does not
/// hold the volume (or snapshot) forwards the call to the node that does, which answers it as if
/// asked directly.
extension ControllerService {
    /// The owner's answer to `request`, or nil when no node holds `volumeID` (every peer said
    /// so). UNAVAILABLE when a peer that might hold it cannot be asked. Calls that were
    /// themselves forwarded are never forwarded again.
    func forwardToOwner<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        of volumeID: String, method: String, _ request: Request, as _: Response.Type
    ) async throws -> Response? {
        guard forwardsToOwner else { return nil }
        return try await context.forwardToVolumeOwner(of: volumeID, method: method, request, as: Response.self)
    }

    /// Sends a DeleteSnapshot to the node that took the snapshot; false when no peer holds it
    /// (or this call was itself forwarded, or this node has no peers).
    func forwardToSnapshotOrigin(_ snapshotID: String, _ request: Csi_V1_DeleteSnapshotRequest) async throws -> Bool {
        guard forwardsToOwner, let peers = context.peers,
              let origin = try await peers.directory.locateSnapshotOrigin(snapshotID) else { return false }
        _ = try await context.forward(method: "DeleteSnapshot", request, to: origin, as: Csi_V1_DeleteSnapshotResponse.self)
        return true
    }
}

/// Answers the controller calls other nodes forward here (see `forwardToOwner`), with a
/// controller service that never forwards again.
final class ForwardedControllerCalls: Sendable {
    let service: ControllerService

    init(service: ControllerService) { self.service = service }

    func handle(method: String, request: [UInt8]) async throws -> [UInt8] {
        switch method {
        case "DeleteVolume":
            try await answer(Csi_V1_DeleteVolumeRequest.self, request, method) { try await self.service.deleteVolume(request: $0, context: $1) }
        case "CreateSnapshot":
            try await answer(Csi_V1_CreateSnapshotRequest.self, request, method) { try await self.service.createSnapshot(request: $0, context: $1) }
        case "ControllerExpandVolume":
            try await answer(Csi_V1_ControllerExpandVolumeRequest.self, request, method) {
                try await self.service.controllerExpandVolume(request: $0, context: $1)
            }
        case "DeleteSnapshot":
            try await answer(Csi_V1_DeleteSnapshotRequest.self, request, method) { try await self.service.deleteSnapshot(request: $0, context: $1) }
        case "ControllerGetVolume":
            try await answer(Csi_V1_ControllerGetVolumeRequest.self, request, method) { try await self.service.controllerGetVolume(request: $0, context: $1) }
        default:
            throw RPCError(code: .unimplemented, message: "\(method) is not a call one node forwards to another")
        }
    }

    private func answer<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _: Request.Type, _ bytes: [UInt8], _ method: String,
        _ body: @Sendable (Request, ServerContext) async throws -> Response
    ) async throws -> [UInt8] {
        let request: Request
        do { request = try Request(serializedBytes: bytes) } catch {
            throw RPCError(code: .invalidArgument, message: "the forwarded \(method) request does not decode")
        }
        let context = ServerContext(
            descriptor: MethodDescriptor(fullyQualifiedService: "csi.v1.Controller", method: method),
            remotePeer: "peer", localPeer: "", cancellation: ServerContext.RPCCancellationHandle())
        return try await body(request, context).serializedBytes()
    }
}

extension DriverContext {
    /// The answer of `volumeID`'s owner (another node) to the controller call `method`, or nil
    /// when no node holds the volume (every peer said so) or this driver has no peers.
    /// UNAVAILABLE when a peer that might hold it cannot be asked.
    func forwardToVolumeOwner<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        of volumeID: String, method: String, _ request: Request, as _: Response.Type
    ) async throws -> Response? {
        guard let peers else { return nil }
        let owner: PeerEndpoint
        do {
            owner = try await RemoteVolumeLink.locateOwner(of: volumeID, directory: peers.directory)
        } catch let error as PeeringError where error.rpcErrorCode == .notFound {
            return nil
        }
        return try await forward(method: method, request, to: owner, as: Response.self)
    }

    /// The controller call `method` as the node at `endpoint` answers it (ForwardController).
    func forward<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        method: String, _ request: Request, to endpoint: PeerEndpoint, as _: Response.Type
    ) async throws -> Response {
        guard let peers else { throw CSIError.failedPrecondition("this driver has no peer settings to reach node \(endpoint)") }
        let call = Strata_Peer_V1_ForwardedCall.with { call in
            call.method = method
            call.request = (try? request.serializedData()) ?? Data()
        }
        let reply = try await peers.directory.connector.withClient(endpoint) { client in
            try await client.forwardController(call, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
        }
        return try Response(serializedBytes: reply.response)
    }
}
