import BlockStore
import CSIProto
import CSIValidation
import GRPCCore
import Peering

/// CSI Controller: volumes, snapshots, expansion and capacity, backed by the block store.
/// Every handler validates first, then takes the locks of the names or ids it touches, then acts.
struct ControllerService: Csi_V1_Controller.SimpleServiceProtocol {
    let context: DriverContext
    /// Whether calls about a volume another node owns go to that node (off for calls that were
    /// forwarded here, so that none travels twice).
    var forwardsToOwner = true

    func createVolume(request: Csi_V1_CreateVolumeRequest, context _: ServerContext) async throws -> Csi_V1_CreateVolumeResponse {
        try RequestFields.requireName(request.name)
        try VolumeCapabilityRules.validate(request.volumeCapabilities)
        let parameters = try StorageClassParameters(request.parameters)
        let multiNode = request.volumeCapabilities.contains(where: VolumeCapabilityRules.isMultiNode)
        let capacity = try CapacityRequest(request.hasCapacityRange ? request.capacityRange : nil)
        if request.hasAccessibilityRequirements, !context.admits(request.accessibilityRequirements) {
            throw CSIError.resourceExhausted("volumes are created on the node that asks; node \(context.configuration.nodeID) is not in the requisite topology")
        }
        let store = try context.store()
        let source = try resolveSource(request)
        var located: (size: UInt64, replicaOfVolume: String?)?
        if let source { located = try await locate(source, forVolumeNamed: request.name, in: store) }
        let size = try capacity.sizeForNewVolume(sourceSize: located?.size)
        let replicaOfVolume = located?.replicaOfVolume

        let volume = try await context.locks.withLocks([LockKey.volumeName(request.name)]) {
            try await BlockingWork.run {
                if let existing = try store.volume(named: request.name) {
                    try checkCompatible(existing, with: request, capacity: capacity, source: source, parameters: parameters, multiNode: multiNode)
                    return existing
                }
                try checkPoolCanHold(size, store: store)
                if let replicaOfVolume, let source {
                    return try store.createVolumeFromReplica(
                        name: request.name, size: size, replicaID: replicaOfVolume, recordedSource: source, parameters: parameters.stored,
                        multiNode: multiNode)
                }
                return try store.createVolume(
                    name: request.name, size: size, clusterSize: parameters.clusterSize, source: source,
                    parameters: parameters.stored, multiNode: multiNode)
            }
        }
        if let replicaOfVolume { releaseOnOrigin(replicaOfVolume, store: store) }
        return .with { $0.volume = context.wireVolume(volume) }
    }

    func deleteVolume(request: Csi_V1_DeleteVolumeRequest, context _: ServerContext) async throws -> Csi_V1_DeleteVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let store = try context.store()
        let heldHere = try await context.locks.withLocks([LockKey.volume(request.volumeID)]) {
            try await BlockingWork.run {
                do {
                    try store.deleteVolume(id: request.volumeID)
                    return true
                } catch let error as StoreError where error.code == .notFound {
                    return false
                } catch let error as StoreError where error.code == .busy {
                    throw CSIError.failedPrecondition("volume \(request.volumeID) is staged (here or on another node); unstage it before deleting")
                }
            }
        }
        // Not here: a multi-node volume of another node is deleted there; deleting what is on no
        // node succeeds (the CO may be retrying a delete that completed).
        if !heldHere { _ = try await forwardToOwner(of: request.volumeID, method: "DeleteVolume", request, as: Csi_V1_DeleteVolumeResponse.self) }
        return .init()
    }

    func controllerExpandVolume(request: Csi_V1_ControllerExpandVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerExpandVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        guard request.hasCapacityRange else { throw CSIError.invalidArgument("capacity_range is required") }
        let capacity = try CapacityRequest(request.capacityRange)
        if request.hasVolumeCapability, let reason = VolumeCapabilityRules.unsupportedReason(request.volumeCapability) {
            throw CSIError.invalidArgument(reason)
        }
        let store = try context.store()
        if try await !holds(request.volumeID, in: store),
           let answer = try await forwardToOwner(
               of: request.volumeID, method: "ControllerExpandVolume", request, as: Csi_V1_ControllerExpandVolumeResponse.self) {
            return answer
        }
        let volume = try await context.locks.withLocks([LockKey.volume(request.volumeID)]) {
            try await BlockingWork.run {
                let current = try store.volume(id: request.volumeID)
                let size = try capacity.sizeAfterExpanding(from: current.size)
                if size > current.size { try checkPoolCanHold(size, store: store) }
                return try store.expandVolume(id: request.volumeID, to: size)
            }
        }
        return .with {
            $0.capacityBytes = Int64(clamping: volume.size)
            // The node must grow the filesystem, and for a block volume refresh the loop
            // device's size: either way kubelet has to call NodeExpandVolume.
            $0.nodeExpansionRequired = true
        }
    }

    func controllerModifyVolume(request: Csi_V1_ControllerModifyVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerModifyVolumeResponse {
        throw RPCError(code: .unimplemented, message: "Strata volumes have no mutable parameters (MODIFY_VOLUME is not offered)")
    }

    /// Whether `volumeID` lives in this node's store.
    func holds(_ volumeID: String, in store: BlockStore) async throws -> Bool {
        try await BlockingWork.run {
            do {
                _ = try store.volume(id: volumeID)
                return true
            } catch let error as StoreError where error.code == .notFound {
                return false
            }
        }
    }

    // MARK: - CreateVolume helpers

    private func resolveSource(_ request: Csi_V1_CreateVolumeRequest) throws(CSIError) -> VolumeSource? {
        guard request.hasVolumeContentSource else { return nil }
        switch request.volumeContentSource.type {
        case .snapshot(let snapshot):
            try RequestFields.requireID(snapshot.snapshotID, field: "volume_content_source.snapshot.snapshot_id")
            return .snapshot(id: snapshot.snapshotID)
        case .volume(let volume):
            try RequestFields.requireID(volume.volumeID, field: "volume_content_source.volume.volume_id")
            return .volume(id: volume.volumeID)
        case nil:
            throw .invalidArgument("volume_content_source names neither a snapshot nor a volume")
        }
    }

    func sourceSizeOf(_ source: VolumeSource, in store: BlockStore) throws -> UInt64 {
        switch source {
        case .snapshot(let id): try store.snapshot(id: id).size
        case .volume(let id): try store.volume(id: id).size
        }
    }

    /// A repeated CreateVolume returns the volume it made if the request still describes it.
    private func checkCompatible(
        _ existing: Volume, with request: Csi_V1_CreateVolumeRequest, capacity: CapacityRequest,
        source: VolumeSource?, parameters: StorageClassParameters, multiNode: Bool
    ) throws(CSIError) {
        let fitsRange = existing.size >= capacity.requiredBytes && (capacity.limitBytes == 0 || existing.size <= capacity.limitBytes)
        guard fitsRange else {
            throw .alreadyExists("volume \(request.name) exists with \(existing.size) bytes, outside the requested range")
        }
        guard existing.source == source else {
            throw .alreadyExists("volume \(request.name) exists with a different content source")
        }
        guard existing.parameters == parameters.stored else {
            throw .alreadyExists("volume \(request.name) exists with different parameters \(existing.parameters)")
        }
        guard existing.multiNode == multiNode else {
            throw .alreadyExists("volume \(request.name) exists as a \(existing.multiNode ? "multi" : "single")-node volume")
        }
    }

    /// Thin provisioning lets volumes together exceed the pool, but not one volume alone.
    private func checkPoolCanHold(_ size: UInt64, store: BlockStore) throws {
        let pool = try store.filesystemSpace()
        guard size <= pool.totalBytes else {
            throw CSIError.resourceExhausted("a volume of \(size) bytes is larger than the whole pool (\(pool.totalBytes) bytes)")
        }
    }
}
