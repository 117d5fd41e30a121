import BlockStore
import CSIValidation
import GRPCCore
import Peering

/// The owner's rules for multi-node volumes, for the peers that stage them remotely: only a
/// multi-node (ReadWriteMany Block) volume, on at most two nodes at once counting this one when
/// it stages the volume itself (a live migration's source and target), decided under the same
/// per-volume lock as the CSI calls.
extension DriverContext: RemoteStagingHost {
    static let maximumStagingNodes = 2

    func attachRemoteStager(_ node: String, toVolume volumeID: String) async throws -> RemoteStaging {
        let store = try store()
        return try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run { [self] in
                let volume = try store.volume(id: volumeID)
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
            try await BlockingWork.run { try store.removeRemoteStager(node, fromVolume: volumeID) }
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
