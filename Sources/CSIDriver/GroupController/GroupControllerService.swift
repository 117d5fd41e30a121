import BlockStore
import CSIProto
import CSIValidation
import Foundation
import GRPCCore
import Peering
import SwiftProtobuf

/// CSI GroupController: snapshots of several volumes at one point in time.
///
/// A group is a set of store snapshots sharing a group id; each member is named
/// `<group name>/<volume id>` (`/` never occurs in Kubernetes object names), which makes the
/// group name the key to idempotent creation.
struct GroupControllerService: Csi_V1_GroupController.SimpleServiceProtocol {
    let context: DriverContext

    func groupControllerGetCapabilities(request: Csi_V1_GroupControllerGetCapabilitiesRequest, context _: ServerContext) async throws -> Csi_V1_GroupControllerGetCapabilitiesResponse {
        .with { $0.capabilities = [.with { $0.rpc = .with { $0.type = .createDeleteGetVolumeGroupSnapshot } }] }
    }

    func createVolumeGroupSnapshot(request: Csi_V1_CreateVolumeGroupSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_CreateVolumeGroupSnapshotResponse {
        try RequestFields.requireName(request.name)
        try Self.requireMemberNames(for: request.name)
        guard !request.sourceVolumeIds.isEmpty else { throw CSIError.invalidArgument("source_volume_ids is required") }
        for id in request.sourceVolumeIds { try RequestFields.requireID(id, field: "source_volume_ids") }
        guard Set(request.sourceVolumeIds).count == request.sourceVolumeIds.count else {
            throw CSIError.invalidArgument("source_volume_ids lists a volume twice")
        }
        try SnapshotParameters.validate(request.parameters)
        let store = try context.store()
        let members = try await context.locks.withLocks([LockKey.groupName(request.name)]) {
            try await BlockingWork.run { () throws -> [Snapshot] in
                let existing = try store.groupSnapshots(namePrefix: Self.memberPrefix(request.name))
                if !existing.isEmpty {
                    guard Set(existing.map(\.sourceVolumeID)) == Set(request.sourceVolumeIds) else {
                        throw CSIError.alreadyExists("group snapshot \(request.name) exists for other volumes")
                    }
                    return existing
                }
                // Unknown volumes are NOT_FOUND here, before their ids become parts of member names.
                for id in request.sourceVolumeIds { _ = try store.volume(id: id) }
                let groupID = "grp-" + UUID().uuidString.lowercased()
                return try context.whileQuiesced(request.sourceVolumeIds) {
                    try store.createSnapshots(
                        request.sourceVolumeIds.map { (name: Self.memberPrefix(request.name) + $0, volumeID: $0) }, groupID: groupID)
                }
            }
        }
        return .with { $0.groupSnapshot = Self.wireGroup(members) }
    }

    func deleteVolumeGroupSnapshot(request: Csi_V1_DeleteVolumeGroupSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_DeleteVolumeGroupSnapshotResponse {
        try RequestFields.requireID(request.groupSnapshotID, field: "group_snapshot_id")
        let store = try context.store()
        try await context.locks.withLocks([LockKey.group(request.groupSnapshotID)]) {
            try await BlockingWork.run {
                let members = try store.snapshots(inGroup: request.groupSnapshotID)
                guard !members.isEmpty else { return }
                try Self.checkSnapshotList(request.snapshotIds, matches: members)
                for member in members {
                    do { try store.deleteSnapshot(id: member.id) } catch let error as StoreError where error.code == .notFound {}
                }
            }
        }
        return .init()
    }

    func getVolumeGroupSnapshot(request: Csi_V1_GetVolumeGroupSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_GetVolumeGroupSnapshotResponse {
        try RequestFields.requireID(request.groupSnapshotID, field: "group_snapshot_id")
        let store = try context.store()
        let members = try await BlockingWork.run { try store.snapshots(inGroup: request.groupSnapshotID) }
        guard !members.isEmpty else { throw CSIError.notFound("group snapshot \(request.groupSnapshotID) not found") }
        try Self.checkSnapshotList(request.snapshotIds, matches: members)
        return .with { $0.groupSnapshot = Self.wireGroup(members) }
    }

    static func memberPrefix(_ groupName: String) -> String { groupName + "/" }

    /// Bytes of a Strata volume id (`vol-` and a UUID), the suffix of every member name.
    static let volumeIDBytes = 40

    /// A group name must make valid member names: no `/` (group "a" would find the members of
    /// group "a/b" by prefix), and room for `/<volume id>` within the store's name limit.
    private static func requireMemberNames(for groupName: String) throws(CSIError) {
        guard !groupName.contains("/") else {
            throw .invalidArgument("name must not contain \"/\": group snapshot members are named <group name>/<volume id>")
        }
        let longest = RequestFields.maximumNameBytes - 1 - volumeIDBytes
        guard groupName.utf8.count <= longest else {
            throw .invalidArgument("name is \(groupName.utf8.count) bytes; a group snapshot name may have at most \(longest)")
        }
    }

    /// The CO may name the members it expects; a different list is INVALID_ARGUMENT (spec).
    private static func checkSnapshotList(_ ids: [String], matches members: [Snapshot]) throws(CSIError) {
        guard ids.isEmpty || Set(ids) == Set(members.map(\.id)) else {
            throw .invalidArgument("snapshot_ids do not match the members of the group snapshot")
        }
    }

    private static func wireGroup(_ members: [Snapshot]) -> Csi_V1_VolumeGroupSnapshot {
        .with {
            $0.groupSnapshotID = members.first?.groupID ?? ""
            $0.snapshots = members.map { DriverContext.wireSnapshot($0) }
            $0.creationTime = Google_Protobuf_Timestamp(date: members.map(\.createdAt).min() ?? Date())
            $0.readyToUse = true
        }
    }
}
