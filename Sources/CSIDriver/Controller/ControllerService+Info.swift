import BlockStore
import CSIProto
import CSIValidation
import GRPCCore
import Peering

/// Read-only controller calls: listing, inspection, capability checks and capacity.
extension ControllerService {
    func listVolumes(request: Csi_V1_ListVolumesRequest, context _: ServerContext) async throws -> Csi_V1_ListVolumesResponse {
        try RequestFields.requireNonNegative(request.maxEntries, field: "max_entries")
        let store = try context.store()
        let (page, stagers) = try await BlockingWork.run {
            do {
                return (try store.listVolumes(
                    after: request.startingToken.isEmpty ? nil : request.startingToken, limit: Int(request.maxEntries)),
                        try store.remoteStagersByVolume())
            } catch let error as StoreError where error.code == .invalidArgument {
                throw CSIError.aborted("starting_token \(RequestFields.quoted(request.startingToken)) is not a token this driver issued")
            }
        }
        return .with { response in
            // Not `published_node_ids`: LIST_VOLUMES_PUBLISHED_NODES is not advertised (there is
            // no attach step); where a volume lives and who stages it is in its condition.
            response.entries = page.items.map { volume in
                .with {
                    $0.volume = context.wireVolume(volume)
                    $0.status = .with { $0.volumeCondition = condition(of: volume, remoteStagers: stagers[volume.id] ?? []) }
                }
            }
            response.nextToken = page.nextCursor ?? ""
        }
    }

    func controllerGetVolume(request: Csi_V1_ControllerGetVolumeRequest, context _: ServerContext) async throws -> Csi_V1_ControllerGetVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let store = try context.store()
        if try await !holds(request.volumeID, in: store),
           let answer = try await forwardToOwner(
               of: request.volumeID, method: "ControllerGetVolume", request, as: Csi_V1_ControllerGetVolumeResponse.self) {
            return answer
        }
        let (volume, stagers) = try await BlockingWork.run {
            let volume = try store.volume(id: request.volumeID)
            return (volume, volume.multiNode ? try store.remoteStagers(ofVolume: volume.id) : [])
        }
        return .with {
            $0.volume = context.wireVolume(volume)
            $0.status = .with { $0.volumeCondition = condition(of: volume, remoteStagers: stagers) }
        }
    }

    func validateVolumeCapabilities(request: Csi_V1_ValidateVolumeCapabilitiesRequest, context _: ServerContext) async throws -> Csi_V1_ValidateVolumeCapabilitiesResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        guard !request.volumeCapabilities.isEmpty else { throw CSIError.invalidArgument("volume_capabilities is required") }
        let store = try context.store()
        let volume = try await BlockingWork.run { try store.volume(id: request.volumeID) }
        let reasons = request.volumeCapabilities.compactMap(VolumeCapabilityRules.unsupportedReason)
        if let reason = reasons.first {
            return .with { $0.message = reason }
        }
        if !volume.multiNode, request.volumeCapabilities.contains(where: VolumeCapabilityRules.isMultiNode) {
            return .with { $0.message = "volume \(volume.id) was created for use from one node; a multi-node access mode needs a volume created with one" }
        }
        if let parameters = try? StorageClassParameters(request.parameters), parameters.stored != volume.parameters {
            return .with { $0.message = "volume \(volume.id) was created with parameters \(volume.parameters)" }
        }
        return .with {
            $0.confirmed = .with {
                $0.volumeCapabilities = request.volumeCapabilities
                $0.volumeContext = request.volumeContext
                $0.parameters = request.parameters
            }
        }
    }

    func getCapacity(request: Csi_V1_GetCapacityRequest, context _: ServerContext) async throws -> Csi_V1_GetCapacityResponse {
        if !request.volumeCapabilities.isEmpty { try VolumeCapabilityRules.validate(request.volumeCapabilities) }
        _ = try StorageClassParameters(request.parameters)
        if request.hasAccessibleTopology,
           request.accessibleTopology.segments[DriverConfiguration.topologyKey] != context.configuration.nodeID {
            // Another node's pool: nothing of it is reachable from here.
            return .with { $0.availableCapacity = 0 }
        }
        let store = try context.store()
        let pool = try await BlockingWork.run { try store.filesystemSpace() }
        return .with {
            // Thin provisioning: what the pool can still hold is its free space; a single volume
            // may be as large as the pool.
            $0.availableCapacity = Int64(clamping: pool.freeBytes)
            $0.maximumVolumeSize = .init(Int64(clamping: pool.totalBytes))
            $0.minimumVolumeSize = .init(Int64(CapacityRequest.granularity))
        }
    }

    func controllerGetCapabilities(request: Csi_V1_ControllerGetCapabilitiesRequest, context _: ServerContext) async throws -> Csi_V1_ControllerGetCapabilitiesResponse {
        .with { response in
            response.capabilities = Self.capabilities(
                profile: context.configuration.capabilityProfile, expansion: context.configuration.controllerExpansion
            ).map { type in
                .with { $0.rpc = .with { $0.type = type } }
            }
        }
    }

    /// Exactly what this service implements. Not PUBLISH_UNPUBLISH_VOLUME, PUBLISH_READONLY or
    /// LIST_VOLUMES_PUBLISHED_NODES: there is no attach step (ControllerService+Publish.swift).
    /// Tests/DeployTests/deploycheck/driver_capabilities.json holds the same lists, which the
    /// deploy checks derive the sidecars' API access from; CapabilityFactTests keeps them equal.
    static func capabilities(profile: DriverConfiguration.CapabilityProfile, expansion: Bool) -> [Csi_V1_ControllerServiceCapability.RPC.TypeEnum] {
        var capabilities: [Csi_V1_ControllerServiceCapability.RPC.TypeEnum] = [
            .createDeleteVolume, .createDeleteSnapshot, .listSnapshots, .listVolumes, .cloneVolume,
            .getCapacity, .getVolume, .volumeCondition, .singleNodeMultiWriter,
        ]
        if expansion { capabilities.append(.expandVolume) }
        if profile.advertisesGetSnapshot { capabilities.append(.getSnapshot) }
        return capabilities
    }

    /// A single-node volume is healthy wherever it is; a multi-node one says where it lives,
    /// who stages it and whether it is moving (see `VolumePlacement`).
    func condition(of volume: Volume, remoteStagers: [String]) -> Csi_V1_VolumeCondition {
        guard volume.multiNode else { return Self.healthyCondition }
        return VolumePlacement(
            volume, owner: context.nodeID, stagedOnOwner: context.stager?.isStaged(volume.id) == true, remoteStagers: remoteStagers
        ).condition
    }

    static let healthyCondition = Csi_V1_VolumeCondition.with {
        $0.abnormal = false
        $0.message = "volume is healthy"
    }
}
