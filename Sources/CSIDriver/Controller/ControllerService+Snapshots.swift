import BlockStore
import CSIProto
import CSIValidation
import GRPCCore
import Peering

/// Snapshots: O(1) freezes of a volume's head layer.
extension ControllerService {
    func createSnapshot(request: Csi_V1_CreateSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_CreateSnapshotResponse {
        try RequestFields.requireName(request.name)
        guard !request.name.contains("/") else {
            // Otherwise a snapshot could take (or be returned as) a group member's name.
            throw CSIError.invalidArgument("name must not contain \"/\": such names belong to the members of group snapshots (<group name>/<volume id>)")
        }
        try RequestFields.requireID(request.sourceVolumeID, field: "source_volume_id")
        let parameters = try SnapshotParameters(request.parameters)
        let store = try context.store()
        if try await !holds(request.sourceVolumeID, in: store), try await BlockingWork.run({ try store.snapshot(named: request.name) }) == nil,
           let answer = try await forwardToOwner(
               of: request.sourceVolumeID, method: "CreateSnapshot", request, as: Csi_V1_CreateSnapshotResponse.self) {
            // A snapshot of a multi-node volume is taken where the volume lives.
            return answer
        }
        let snapshot = try await context.locks.withLocks([LockKey.snapshotName(request.name)]) {
            try await BlockingWork.run {
                if let existing = try store.snapshot(named: request.name) {
                    guard existing.sourceVolumeID == request.sourceVolumeID else {
                        throw CSIError.alreadyExists("snapshot \(request.name) exists for another volume (\(existing.sourceVolumeID))")
                    }
                    return existing
                }
                return try context.whileQuiesced([request.sourceVolumeID]) {
                    try store.createSnapshot(name: request.name, of: request.sourceVolumeID)
                }
            }
        }
        if parameters.replication == .allNodes, let peers = context.peers { peers.placeEverywhere(snapshot.id) }
        return .with { $0.snapshot = DriverContext.wireSnapshot(snapshot) }
    }

    func deleteSnapshot(request: Csi_V1_DeleteSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_DeleteSnapshotResponse {
        try RequestFields.requireID(request.snapshotID, field: "snapshot_id")
        let store = try context.store()
        let heldHere = try await BlockingWork.run { try? store.snapshot(id: request.snapshotID) }
        if heldHere?.originNode != nil || heldHere == nil,
           try await forwardToSnapshotOrigin(request.snapshotID, request) {
            // Taken on another node (a snapshot of a multi-node volume is taken where the volume
            // lives, while any node's csi-snapshotter may be the one that deletes it): deleted
            // there, which also tells every node holding a copy. A copy here goes now.
            guard heldHere != nil else { return .init() }
        }
        try await context.locks.withLocks([LockKey.snapshot(request.snapshotID)]) {
            try await BlockingWork.run {
                do {
                    let snapshot = try store.snapshot(id: request.snapshotID)
                    if let group = snapshot.groupID {
                        throw CSIError.failedPrecondition("snapshot \(request.snapshotID) belongs to group snapshot \(group); delete the group instead")
                    }
                    // Clones keep the data they need: the snapshot disappears now, its layer later.
                    try store.deleteSnapshot(id: request.snapshotID)
                    if snapshot.originNode == nil, let peers = context.peers {
                        Task { await peers.janitor.announceDeletion(of: request.snapshotID) }
                    }
                } catch let error as StoreError where error.code == .notFound {
                    // Already gone: success, as the spec asks.
                }
            }
        }
        return .init()
    }

    func listSnapshots(request: Csi_V1_ListSnapshotsRequest, context _: ServerContext) async throws -> Csi_V1_ListSnapshotsResponse {
        try RequestFields.requireNonNegative(request.maxEntries, field: "max_entries")
        let store = try context.store()
        return try await BlockingWork.run {
            if !request.snapshotID.isEmpty {
                // A filter by id answers with that snapshot or with nothing, never with an error.
                let found = try? store.snapshot(id: request.snapshotID)
                let matches = found.map { request.sourceVolumeID.isEmpty || $0.sourceVolumeID == request.sourceVolumeID } ?? false
                return .with { response in
                    response.entries = matches ? [.with { $0.snapshot = DriverContext.wireSnapshot(found!) }] : []
                }
            }
            let page: Page<Snapshot>
            do {
                page = try store.listSnapshots(
                    after: request.startingToken.isEmpty ? nil : request.startingToken, limit: Int(request.maxEntries),
                    sourceVolumeID: request.sourceVolumeID.isEmpty ? nil : request.sourceVolumeID)
            } catch let error as StoreError where error.code == .invalidArgument {
                throw CSIError.aborted("starting_token \(RequestFields.quoted(request.startingToken)) is not a token this driver issued")
            }
            return .with { response in
                response.entries = page.items.map { snapshot in .with { $0.snapshot = DriverContext.wireSnapshot(snapshot) } }
                response.nextToken = page.nextCursor ?? ""
            }
        }
    }

    func getSnapshot(request: Csi_V1_GetSnapshotRequest, context _: ServerContext) async throws -> Csi_V1_GetSnapshotResponse {
        try RequestFields.requireID(request.snapshotID, field: "snapshot_id")
        let store = try context.store()
        let snapshot = try await BlockingWork.run { try store.snapshot(id: request.snapshotID) }
        return .with { $0.snapshot = DriverContext.wireSnapshot(snapshot) }
    }
}
