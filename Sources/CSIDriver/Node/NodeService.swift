import BlockStore
import CSIProto
import CSIValidation
import GRPCCore
import KernelFiles
import NodeHost
import PeerProto
import Peering

/// CSI Node: turns store volumes into block devices and mounted filesystems for kubelet.
/// Arguments are checked before existence (so malformed calls are INVALID_ARGUMENT whatever the
/// id), then the volume is locked, then `VolumeStager` acts.
struct NodeService: Csi_V1_Node.SimpleServiceProtocol {
    let context: DriverContext
    let stager: VolumeStager
    let paths: PathRules

    func nodeStageVolume(request: Csi_V1_NodeStageVolumeRequest, context _: ServerContext) async throws -> Csi_V1_NodeStageVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let stagingPath = try paths.requireResolved(request.stagingTargetPath, field: "staging_target_path")
        guard request.hasVolumeCapability else { throw CSIError.invalidArgument("volume_capability is required") }
        try VolumeCapabilityRules.validate([request.volumeCapability])
        let record = StagedVolume(
            volumeID: request.volumeID, stagingPath: stagingPath, access: Self.access(of: request.volumeCapability),
            readOnly: VolumeCapabilityRules.isReadOnly(request.volumeCapability))
        let multiNode = VolumeCapabilityRules.isMultiNode(request.volumeCapability)
        let store = try context.store()
        if stager.isStaged(request.volumeID) {
            try await withVolume(request.volumeID, mustExist: false) { try stager.stage(record) }
        } else if try await BlockingWork.run({ (try? store.volume(id: request.volumeID)) != nil }) {
            try await withVolume(request.volumeID) { [context] in
                try Self.checkLocalStaging(of: request.volumeID, multiNode: multiNode, store: store, context: context)
                try stager.stage(record)
            }
        } else {
            try await stageRemotely(record, multiNode: multiNode)
        }
        return .init()
    }

    /// A volume of this node staged here: a multi-node capability needs a multi-node volume, and
    /// a multi-node volume two other nodes stage already is refused (a live migration has two
    /// sides, never three).
    private static func checkLocalStaging(of volumeID: String, multiNode: Bool, store: BlockStore, context: DriverContext) throws {
        let volume = try store.volume(id: volumeID)
        if let movedTo = volume.movedTo {
            throw CSIError.failedPrecondition("volume \(volumeID) is moving to node \(movedTo); stage it there")
        }
        if multiNode, !volume.multiNode {
            throw CSIError.failedPrecondition("volume \(volumeID) was created for one node; a multi-node access mode needs a ReadWriteMany volume")
        }
        guard volume.multiNode else { return }
        let others = try store.remoteStagers(ofVolume: volumeID)
        guard others.count < DriverContext.maximumStagingNodes else {
            throw CSIError.failedPrecondition("volume \(volumeID) is staged on \(others.joined(separator: " and ")) already; at most \(DriverContext.maximumStagingNodes) nodes stage a volume at once")
        }
    }

    /// A multi-node volume that lives on another node: its owner admits this node, and the
    /// volume is exported here with its I/O going to the owner.
    private func stageRemotely(_ record: StagedVolume, multiNode: Bool) async throws {
        guard multiNode, let peers = context.peers else {
            throw CSIError.notFound("volume \(record.volumeID) does not exist on node \(context.configuration.nodeID)")
        }
        guard context.isReady else { throw CSIError.unavailable("the node is restoring staged volumes; retry shortly") }
        try await context.locks.withLocks([LockKey.volume(record.volumeID)]) {
            let (link, staging) = try await RemoteVolumeLink.attach(volumeID: record.volumeID, directory: peers.directory)
            var remote = record
            remote.remoteOwner = RemoteOwner(
                node: staging.ownerNode, host: link.owner.host, port: link.owner.port, epoch: staging.epoch, size: staging.size)
            stager.backends.adopt(link)
            try await BlockingWork.run { [remote] in try stager.stage(remote) }
            // Its owner may not stage it any more (the VM was restarted here): then it moves here.
            stager.offerOwnership(record.volumeID)
            context.configuration.logger.notice("staged a volume that lives on another node", metadata: [
                "volumeId": "\(record.volumeID)", "owner": "\(staging.ownerNode)", "stagedOn": "\(staging.stagedOn.joined(separator: ","))",
            ])
        }
    }

    func nodeUnstageVolume(request: Csi_V1_NodeUnstageVolumeRequest, context _: ServerContext) async throws -> Csi_V1_NodeUnstageVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let stagingPath = try paths.requireResolved(request.stagingTargetPath, field: "staging_target_path")
        if try await releasedOwnersAdmission(of: request.volumeID) { return .init() }
        try await withVolume(request.volumeID, mustExist: !stager.isStaged(request.volumeID)) {
            try stager.unstage(volumeID: request.volumeID, stagingPath: stagingPath)
        }
        return .init()
    }

    /// A NodeStage cut short (a crash between the owner's admission of this node and this node's
    /// own record of the staging) leaves the owner counting this node as a stager, which would
    /// keep a third node out and the volume from being deleted or moving. kubelet unstages such
    /// an uncertain staging: for a volume this node neither stages nor holds, the owner is told
    /// to forget this node (idempotent). True when an owner was found and told.
    private func releasedOwnersAdmission(of volumeID: String) async throws -> Bool {
        guard !stager.isStaged(volumeID), let peers = context.peers else { return false }
        let store = try context.store()
        guard try await BlockingWork.run({ (try? store.volume(id: volumeID)) == nil }) else { return false }
        return try await context.locks.withLocks([LockKey.volume(volumeID)]) {
            guard !stager.isStaged(volumeID) else { return false }
            let owner: PeerEndpoint
            do {
                owner = try await RemoteVolumeLink.locateOwner(of: volumeID, directory: peers.directory)
            } catch let error as PeeringError where error.rpcErrorCode == .notFound {
                return false
            }
            let node = context.configuration.nodeID
            _ = try await peers.directory.connector.withRemoteVolumeClient(owner) { client in
                try await client.detach(
                    .with { $0.session = .with { $0.volumeID = volumeID; $0.nodeID = node } },
                    options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            }
            context.configuration.logger.notice("told a volume's owner that this node does not stage it", metadata: [
                "volumeId": "\(volumeID)", "owner": "\(owner.nodeID ?? owner.host)",
            ])
            return true
        }
    }

    func nodePublishVolume(request: Csi_V1_NodePublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_NodePublishVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let targetPath = try paths.requireResolved(request.targetPath, field: "target_path")
        guard request.hasVolumeCapability else { throw CSIError.invalidArgument("volume_capability is required") }
        try VolumeCapabilityRules.validate([request.volumeCapability])
        let stagingPath = try paths.requireResolved(request.stagingTargetPath, field: "staging_target_path")
        let readOnly = request.readonly || VolumeCapabilityRules.isReadOnly(request.volumeCapability)
        try await withVolume(request.volumeID, mustExist: !stager.isStaged(request.volumeID)) {
            try stager.publish(volumeID: request.volumeID, stagingPath: stagingPath, targetPath: targetPath, readOnly: readOnly)
        }
        return .init()
    }

    func nodeUnpublishVolume(request: Csi_V1_NodeUnpublishVolumeRequest, context _: ServerContext) async throws -> Csi_V1_NodeUnpublishVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        let targetPath = try paths.requireResolved(request.targetPath, field: "target_path")
        try await withVolume(request.volumeID, mustExist: !stager.isStaged(request.volumeID)) {
            try stager.unpublish(volumeID: request.volumeID, targetPath: targetPath)
        }
        return .init()
    }

    func nodeGetVolumeStats(request: Csi_V1_NodeGetVolumeStatsRequest, context _: ServerContext) async throws -> Csi_V1_NodeGetVolumeStatsResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        guard !request.volumePath.isEmpty else { throw CSIError.invalidArgument("volume_path is required") }
        let path = try? paths.requireResolved(request.volumePath, field: "volume_path")
        let report = try await withVolume(request.volumeID, mustExist: !stager.isStaged(request.volumeID), exclusive: false) { () throws -> VolumeStager.VolumeReport in
            guard let path else { throw CSIError.notFound("volume \(request.volumeID) is not published at \(RequestFields.quoted(request.volumePath, limit: PathRules.quotedLength))") }
            return try stager.report(volumeID: request.volumeID, path: path)
        }
        return .with { response in
            var usage = [Csi_V1_VolumeUsage.with {
                $0.unit = .bytes
                $0.total = Int64(clamping: report.totalBytes)
                if let available = report.availableBytes { $0.available = Int64(clamping: available) }
                if let used = report.usedBytes { $0.used = Int64(clamping: used) }
            }]
            if let inodes = report.inodes {
                usage.append(.with {
                    $0.unit = .inodes
                    $0.total = Int64(clamping: inodes.total)
                    $0.available = Int64(clamping: inodes.free)
                    $0.used = Int64(clamping: inodes.used)
                })
            }
            response.usage = usage
            response.volumeCondition = .with {
                $0.abnormal = report.abnormal != nil
                $0.message = report.abnormal ?? report.placement ?? "volume is healthy"
            }
        }
    }

    func nodeExpandVolume(request: Csi_V1_NodeExpandVolumeRequest, context _: ServerContext) async throws -> Csi_V1_NodeExpandVolumeResponse {
        try RequestFields.requireID(request.volumeID, field: "volume_id")
        // An unknown volume is NOT_FOUND whatever else is wrong (csi-sanity asks it with a
        // relative path): expansion acts on the volume, not at the paths.
        let store = try context.store()
        let servedFromOwner = stager.registry[request.volumeID]?.remoteOwner != nil
        if !servedFromOwner { _ = try await BlockingWork.run { try store.volume(id: request.volumeID) } }
        // A request naming paths outside kubelet's directory is not kubelet's: refuse it like
        // every other node call.
        _ = try paths.requireResolved(request.volumePath, field: "volume_path")
        if !request.stagingTargetPath.isEmpty { _ = try paths.requireResolved(request.stagingTargetPath, field: "staging_target_path") }
        let capacity = try CapacityRequest(request.hasCapacityRange ? request.capacityRange : nil)
        // Before the store grows: a range no page-aligned size satisfies is refused up front.
        try capacity.requireAlignedSizeInRange()
        if request.hasVolumeCapability, let reason = VolumeCapabilityRules.unsupportedReason(request.volumeCapability) {
            throw CSIError.invalidArgument(reason)
        }
        let size: UInt64
        if servedFromOwner {
            let ownerSize = try await sizeOnOwner(of: request.volumeID, atLeast: capacity.requiredBytes)
            size = try await withVolume(request.volumeID, mustExist: false) {
                try stager.expandRemote(volumeID: request.volumeID, to: ownerSize)
            }
        } else {
            size = try await withVolume(request.volumeID) {
                try stager.expand(volumeID: request.volumeID, requiredBytes: capacity.requiredBytes)
            }
        }
        if capacity.limitBytes > 0, size > capacity.limitBytes {
            throw CSIError.outOfRange("the volume is \(size) bytes, above limit_bytes \(capacity.limitBytes)")
        }
        return .with { $0.capacityBytes = Int64(clamping: size) }
    }

    func nodeGetCapabilities(request: Csi_V1_NodeGetCapabilitiesRequest, context _: ServerContext) async throws -> Csi_V1_NodeGetCapabilitiesResponse {
        let types: [Csi_V1_NodeServiceCapability.RPC.TypeEnum] = [
            .stageUnstageVolume, .expandVolume, .getVolumeStats, .volumeCondition, .singleNodeMultiWriter,
        ]
        return .with { $0.capabilities = types.map { type in .with { $0.rpc = .with { $0.type = type } } } }
    }

    func nodeGetInfo(request: Csi_V1_NodeGetInfoRequest, context _: ServerContext) async throws -> Csi_V1_NodeGetInfoResponse {
        let limit = try await BlockingWork.run { try NodeLimits.maximumVolumes(attacher: stager.attacher, staged: stager.registry.all.count) }
        return .with {
            $0.nodeID = context.configuration.nodeID
            $0.maxVolumesPerNode = limit
            $0.accessibleTopology = context.nodeTopology
        }
    }

    // MARK: - Helpers

    /// The size of a volume served from its owner, grown there first when `requiredBytes` asks
    /// for more (ControllerExpandVolume on the owner: idempotent, as when its own sidecar asks).
    private func sizeOnOwner(of volumeID: String, atLeast requiredBytes: UInt64) async throws -> UInt64 {
        let bytes: Int64?
        if requiredBytes > 0 {
            let request = Csi_V1_ControllerExpandVolumeRequest.with {
                $0.volumeID = volumeID
                $0.capacityRange = .with { $0.requiredBytes = Int64(clamping: requiredBytes) }
            }
            bytes = try await context.forwardToVolumeOwner(
                of: volumeID, method: "ControllerExpandVolume", request, as: Csi_V1_ControllerExpandVolumeResponse.self)?.capacityBytes
        } else {
            bytes = try await context.forwardToVolumeOwner(
                of: volumeID, method: "ControllerGetVolume", Csi_V1_ControllerGetVolumeRequest.with { $0.volumeID = volumeID },
                as: Csi_V1_ControllerGetVolumeResponse.self)?.volume.capacityBytes
        }
        guard let bytes else { throw CSIError.notFound("volume \(volumeID) lives on no node any more") }
        return UInt64(bytes)
    }

    static func access(of capability: Csi_V1_VolumeCapability) -> StagedVolume.Access {
        if case .mount(let mount) = capability.accessType {
            return .filesystem(type: mount.fsType, mountFlags: mount.mountFlags)
        }
        return .block
    }

    /// Runs node work for one volume: NOT_FOUND if the store does not know it, ABORTED if another
    /// operation on it is running, and never on Swift's cooperative threads.
    private func withVolume<Value: Sendable>(
        _ volumeID: String, mustExist: Bool = true, exclusive: Bool = true, _ work: @escaping @Sendable () throws -> Value
    ) async throws -> Value {
        let store = try context.store()
        guard context.isReady else { throw CSIError.unavailable("the node is restoring staged volumes; retry shortly") }
        let body: () async throws -> Value = {
            try await BlockingWork.run {
                if mustExist { _ = try store.volume(id: volumeID) }
                return try work()
            }
        }
        return exclusive ? try await context.locks.withLocks([LockKey.volume(volumeID)], body) : try await body()
    }
}

/// How many volumes this node can take: each staged volume needs a loop device.
enum NodeLimits {
    static let ceiling: Int64 = 1024

    /// The same figure for NodeGetInfo and ControllerPublishVolume's limit.
    static func maximumVolumes(attacher: any Attacher, staged: Int) throws -> Int64 {
        // With max_loop=0 (the default) the kernel creates loop devices on demand.
        let maxLoop = (try? KernelFile.readTrimmed("/sys/module/loop/parameters/max_loop")).flatMap { Int($0) } ?? 0
        guard maxLoop > 0 else { return ceiling }
        return min(ceiling, Int64(staged + (try attacher.freeDeviceCount())))
    }
}
