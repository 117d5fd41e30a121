import BlockStore
import CSIValidation
import GRPCCore
import Peering

/// The owner's rules for multi-node volumes, for the peers that stage them remotely: only a
/// multi-node (ReadWriteMany Block) volume, on at most two nodes at once counting this one when
/// it stages the volume itself (a live migration's source and target), decided under the same
/// per-volume lock as the CSI calls.
extension DriverContext: HandOverHost {
    static let maximumStagingNodes = 2

    func attachRemoteStager(_ node: String, toVolume volumeID: String) async throws -> RemoteStaging {
        let store = try store()
        return try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run { [self] in
                let volume = try store.volume(id: volumeID)
                if let movedTo = volume.movedTo {
                    throw CSIError.failedPrecondition("volume \(volumeID) is moving from node \(nodeID) to node \(movedTo)")
                }
                guard volume.multiNode else {
                    throw CSIError.failedPrecondition("volume \(volumeID) was created for one node (ReadWriteOnce); only a ReadWriteMany Block volume is staged on several nodes")
                }
                let others = try stagingNodes(of: volumeID, in: store).filter { $0 != node }
                guard others.count < Self.maximumStagingNodes else {
                    throw CSIError.failedPrecondition("volume \(volumeID) is staged on \(others.joined(separator: " and ")) already; at most \(Self.maximumStagingNodes) nodes stage a volume at once")
                }
                try store.addRemoteStager(node, toVolume: volumeID)
                return RemoteStaging(size: volume.size, epoch: volume.epoch, ownerNode: nodeID, stagedOn: others + [node])
            }
        }
    }

    func detachRemoteStager(_ node: String, fromVolume volumeID: String) async throws {
        let store = try store()
        try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run {
                try store.removeRemoteStager(node, fromVolume: volumeID)
                // A handover to that node that never completed leaves nothing behind.
                if (try? store.volume(id: volumeID))?.movedTo == nil {
                    for snapshot in try store.hiddenSnapshots(ofVolume: volumeID, namedWithPrefix: "handover:\(node):") {
                        try store.releasePeerSnapshot(id: snapshot.id)
                    }
                }
            }
        }
    }

    /// Every node staging `volumeID` now: this one if its node service has it staged, then the
    /// peers the catalog records.
    func stagingNodes(of volumeID: String, in store: BlockStore) throws -> [String] {
        let here = stager?.isStaged(volumeID) == true ? [nodeID] : []
        return here + (try store.remoteStagers(ofVolume: volumeID))
    }

    func handleForwardedCall(method: String, request: [UInt8]) async throws -> [UInt8] {
        guard let forwarded = forwardedCalls else {
            throw RPCError(code: .unimplemented, message: "node \(nodeID) serves no controller calls")
        }
        return try await forwarded.handle(method: method, request: request)
    }
}

/// The owner's side of an ownership handover (see `VolumeStager.takeOwnership`).
extension DriverContext {
    /// Hidden snapshots a handover makes are named after the node taking the volume over.
    static func handOverSnapshotName(to node: String, freeze: Bool) -> String { "handover:\(node):\(freeze ? "final" : "bulk")" }

    func handOver(_ volumeID: String, to node: String, freeze: Bool) async throws -> HandOverOffer {
        let store = try store()
        return try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run { [self] in
                var volume = try store.volume(id: volumeID)
                guard volume.multiNode else { throw CSIError.failedPrecondition("volume \(volumeID) is single-node: it does not move") }
                guard stager?.isStaged(volumeID) != true else {
                    throw CSIError.failedPrecondition("volume \(volumeID) is still staged on node \(nodeID); it moves once this node lets go")
                }
                guard try store.remoteStagers(ofVolume: volumeID).contains(node) else {
                    throw CSIError.failedPrecondition("node \(node) does not stage volume \(volumeID)")
                }
                if let movedTo = volume.movedTo, movedTo != node {
                    throw CSIError.failedPrecondition("volume \(volumeID) is moving to node \(movedTo)")
                }
                // Once frozen, every answer is the final snapshot: nothing was written after it.
                let final = freeze || volume.movedTo != nil
                let snapshot = try store.createPeerSnapshot(name: Self.handOverSnapshotName(to: node, freeze: final), of: volumeID)
                if final {
                    let wasMoving = volume.movedTo != nil
                    volume = try store.fenceVolume(id: volumeID, movedTo: node)
                    if !wasMoving {
                        configuration.logger.notice("froze a volume for its next owner: it takes no more writes here", metadata: [
                            "volumeId": "\(volumeID)", "from": "\(nodeID)", "to": "\(node)", "epoch": "\(volume.epoch)",
                        ])
                    }
                } else {
                    configuration.logger.notice("handing a volume over: its next owner copies it while its I/O still comes here", metadata: [
                        "volumeId": "\(volumeID)", "from": "\(nodeID)", "to": "\(node)", "epoch": "\(volume.epoch)",
                    ])
                }
                return HandOverOffer(
                    manifest: try store.replicaManifest(snapshotID: snapshot.id), volumeName: volume.name, epoch: volume.epoch,
                    parameters: volume.parameters)
            }
        }
    }

    func releaseHandedOver(_ volumeID: String, to node: String, stagerForgotten: @escaping @Sendable () -> Void) async throws {
        let store = try store()
        try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run { [self] in
                let volume: Volume
                do { volume = try store.volume(id: volumeID) } catch let error as StoreError where error.code == .notFound { return }
                guard volume.movedTo == node else {
                    throw CSIError.failedPrecondition("volume \(volumeID) was not handed to node \(node)")
                }
                try deleteHandedOver(volume, store: store, stagerForgotten: stagerForgotten)
            }
        }
    }

    private func deleteHandedOver(_ volume: Volume, store: BlockStore, stagerForgotten: () -> Void) throws {
        for node in try store.remoteStagers(ofVolume: volume.id) { try store.removeRemoteStager(node, fromVolume: volume.id) }
        stagerForgotten()
        for snapshot in try store.hiddenSnapshots(ofVolume: volume.id, namedWithPrefix: "handover:") {
            try store.releasePeerSnapshot(id: snapshot.id)
        }
        try store.deleteVolume(id: volume.id)
        metrics?.recordHandOverReleased()
        configuration.logger.notice("handed a volume over and deleted it here", metadata: [
            "volumeId": "\(volume.id)", "from": "\(nodeID)", "to": "\(volume.movedTo ?? "")", "epoch": "\(volume.epoch)",
        ])
    }

    func tidyHandedOver(stagerForgotten: @escaping @Sendable (String) -> Void) async {
        guard let store = try? store(),
              let volumes = try? await BlockingWork.run({ try store.listVolumes(after: nil, limit: 0).items }) else { return }
        await offerVolumesLetGo(volumes, store: store)
        await deleteVolumesHandedOver(volumes.filter { $0.movedTo != nil }, store: store, stagerForgotten: stagerForgotten)
    }

    /// Offers again every volume that lives here, is staged only on other nodes, and has not
    /// moved: its unstage here (a live migration that ended elsewhere) sent the stager a hint
    /// to take it over, but a hint is lost when this process dies before it is sent, or the
    /// stager's driver was down. Sent at start and on every check, it makes the volume follow its
    /// VM after all; the stager takes it over or learns it cannot (the owner decides either way).
    private func offerVolumesLetGo(_ volumes: [Volume], store: BlockStore) async {
        guard let stager else { return }
        let candidates = volumes.filter { $0.multiNode && $0.movedTo == nil && !stager.isStaged($0.id) }
        guard !candidates.isEmpty else { return }
        let letGo = (try? await BlockingWork.run {
            candidates.filter { (try? store.remoteStagers(ofVolume: $0.id))?.isEmpty == false }
        }) ?? []
        for volume in letGo { stager.offerToRemoteStagers(volume.id) }
    }

    /// Volumes frozen for a node that now owns them (its release was lost to a crash): deleted.
    private func deleteVolumesHandedOver(_ moved: [Volume], store: BlockStore, stagerForgotten: @escaping @Sendable (String) -> Void) async {
        guard let peers, !moved.isEmpty else { return }
        let endpoints = await peers.directory.endpoints()
        for volume in moved {
            guard let node = volume.movedTo, let endpoint = endpoints.first(where: { $0.nodeID == node }) else { continue }
            let owner = try? await peers.directory.connector.withClient(endpoint) { client in
                try await client.locateVolume(.with { $0.volumeID = volume.id }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
            }
            guard let owner, owner.ownerNode == node, owner.epoch >= volume.epoch else { continue }
            _ = try? await locks.withLocks([LockKey.volume(volume.id)]) {
                try await BlockingWork.run { [self] in try deleteHandedOver(volume, store: store) { stagerForgotten(volume.id) } }
            }
        }
    }

    func ownershipOffered(_ volumeID: String, by owner: String) {
        guard let stager, stager.registry[volumeID]?.remoteOwner?.node == owner else { return }
        stager.offerOwnership(volumeID)
    }
}
