import BlockStore
import CSIValidation
import Foundation
import GRPCCore
import Logging
import Peering
import Synchronization

/// The volume follows its VM: when the owner of a multi-node volume no longer stages it while
/// this node does (a live migration ended here), this node takes ownership. First it copies a
/// hidden snapshot of the volume while its I/O still goes to the owner (the bulk of the data,
/// skipping layers already here); then it holds its I/O, flushes it through the owner, has the
/// owner freeze the volume (the owner's epoch rises, so it takes no more writes: fencing),
/// copies the last small snapshot, and commits the volume in its own store under the same id at
/// the new epoch, before its I/O goes on, now locally. Last, the old owner deletes its copy.
///
/// Every step can be repeated: snapshots are found again by name, copies skip what is here, the
/// adopted volume is found again by id. A crash of either side leaves one owner: the old one
/// until the new one committed (the new one's registry still names it), the new one after.
extension VolumeStager {
    /// Takes ownership of `volumeID`, staged here from another node; returns false when the
    /// owner keeps it (it still stages the volume itself).
    @discardableResult
    func takeOwnership(of volumeID: String) async throws -> Bool {
        guard let record = registry[volumeID], let owner = record.remoteOwner, let peers = context.peers else { return false }
        let endpoint = PeerEndpoint(host: owner.host, port: owner.port, nodeID: owner.node)
        let store = try context.store()
        let here = context.configuration.nodeID
        // Every line of a handover names the volume, both nodes and the epoch, so that an
        // admin can follow one move across the two nodes' logs.
        func step(_ message: Logger.Message, epoch: UInt64, _ extra: Logger.Metadata = [:]) {
            logger.notice(message, metadata: [
                "volumeId": "\(volumeID)", "from": "\(owner.node)", "to": "\(here)", "epoch": "\(epoch)",
            ].merging(extra) { $1 })
        }
        if try await BlockingWork.run({ (try? store.volume(id: volumeID)) != nil }) {
            // Committed here already, and a crash came before the registry said so: the old
            // owner may have deleted its copy since; only the switch is left, and the earlier
            // copies if the crash came before they were dropped (the commit and the drop are two
            // store calls): kept, they would hold their layers after the volume is deleted.
            try await BlockingWork.run {
                _ = try store.dropHandOverReplicas(ofVolume: volumeID)
                store.collapsePrivateLayersInBackground(volumeID: volumeID)
            }
            let pause = try await switchToLocal(volumeID, store: store, flushFirst: false)
            let epoch = try await BlockingWork.run { try store.volume(id: volumeID).epoch }
            step("finished taking over a volume committed here before a restart", epoch: epoch, ["ioPause": "\(pause)"])
            await releaseOnPreviousOwner(volumeID, endpoint: endpoint, peers: peers)
            return true
        }
        step("asking the owner to hand a volume over: copying it while its I/O still goes there", epoch: owner.epoch)
        do {
            let bulk = try await peers.fetcher.fetchHandOver(of: volumeID, from: endpoint, freeze: false)
            // Counted once the owner agreed (it no longer stages the volume), not when it keeps
            // it: every restart asks again for each volume served from another node.
            context.metrics?.recordHandOverStarted()
            step("copied the bulk of a volume; holding its I/O for the switch", epoch: bulk.epoch)
        } catch let error as RPCError where error.code == .failedPrecondition {
            step("the owner keeps the volume", epoch: owner.epoch, ["reason": "\(error.message)"])
            return false
        }
        var epoch = owner.epoch
        let pause = try await switchToLocal(volumeID, store: store, flushFirst: true) {
            let last = try await peers.fetcher.fetchHandOver(of: volumeID, from: endpoint, freeze: true)
            epoch = last.epoch
            step("the previous owner froze the volume; committing it here", epoch: last.epoch)
            try await BlockingWork.run {
                _ = try store.createVolumeFromReplica(
                    name: last.volumeName, size: last.manifest.size, replicaID: last.manifest.snapshotID, recordedSource: nil,
                    parameters: last.parameters, multiNode: true, adopting: AdoptedVolume(volumeID: volumeID, epoch: last.epoch))
                // Earlier copies (this takeover's first one, or those of an attempt a restart
                // cut short): their layers stay, read through the volume's chain.
                try store.dropHandOverReplicas(ofVolume: volumeID, except: last.manifest.snapshotID)
                // The copied layers are the volume's history: each holds every cluster written
                // while it was the head, superseded above or not. Kept, the next handover would
                // send them all again (and the chain would grow by two layers per move).
                store.collapsePrivateLayersInBackground(volumeID: volumeID)
            }
        }
        context.metrics?.recordHandOverCompleted(ioPause: pause)
        step("took ownership of a volume from its previous node", epoch: epoch, ["ioPause": "\(pause)"])
        await releaseOnPreviousOwner(volumeID, endpoint: endpoint, peers: peers)
        return true
    }

    /// Holds the volume's I/O (after flushing it through the old owner, when `flushFirst`),
    /// runs `commit` (which makes the volume this store's), then serves it from this store:
    /// the registry stops naming the old owner and the export's backend is swapped. Answers how
    /// long the I/O was held: from the pause (which waits for the requests in flight) to the
    /// resume, what the volume's users saw of the switch.
    private func switchToLocal(
        _ volumeID: String, store: BlockStore, flushFirst: Bool, commit: () async throws -> Void = {}
    ) async throws -> Duration {
        try await context.locks.withLocks([LockKey.volume(volumeID)]) {
            guard let opened = opened.withLock({ $0[volumeID] }), let movable = opened.movable else {
                throw CSIError.failedPrecondition("volume \(volumeID) is not exported here")
            }
            let held = ContinuousClock.now
            try await BlockingWork.run {
                movable.pause()
                guard flushFirst else { return }
                do {
                    try movable.backend.flush()
                } catch is VolumeFenced {
                    // Frozen already (a handover cut short): what the owner acknowledged is in
                    // its final snapshot.
                }
            }
            do {
                try await commit()
                let handle = try await BlockingWork.run { () -> VolumeHandle in
                    let handle = try store.open(volumeID: volumeID)
                    try self.registry.update(volumeID) { $0?.remoteOwner = nil }
                    return handle
                }
                movable.replace(with: StoreVolumeBackend(handle: handle), close: { try handle.close() })
                self.opened.withLock {
                    $0[volumeID] = OpenedBackend(
                        backend: movable, close: { try movable.close() }, release: {}, problem: { nil }, movable: movable)
                }
            } catch {
                movable.resume()
                throw error
            }
            movable.resume()
            return held.duration(to: .now)
        }
    }

    /// Tells the previous owner it may delete its copy; retried until it answers (it may be down).
    func releaseOnPreviousOwner(_ volumeID: String, endpoint: PeerEndpoint, peers: PeerRuntime) async {
        let node = context.configuration.nodeID
        var delay: Duration = .milliseconds(200)
        while !Task.isCancelled {
            do {
                _ = try await peers.directory.connector.withClient(endpoint) { client in
                    try await client.releaseHandedOver(
                        .with { $0.volumeID = volumeID; $0.nodeID = node }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
                }
                logger.notice("the previous owner released a volume it handed over", metadata: [
                    "volumeId": "\(volumeID)", "from": "\(endpoint.nodeID ?? endpoint.host)", "to": "\(node)",
                ])
                return
            } catch {
                logger.warning("the previous owner did not release a volume yet", metadata: ["volumeId": "\(volumeID)", "error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    /// Takes over every volume served from another node whose owner no longer stages it (after
    /// a restart of this process, a handover may have been cut short), in the background; and
    /// collapses again the multi-node volumes owned here, in case a restart cut the collapse that
    /// followed their takeover (it finds nothing to do otherwise, reading only the catalog).
    func resumeHandOvers() {
        for record in registry.all {
            if record.remoteOwner != nil {
                offerOwnership(record.volumeID)
            } else if let store = try? context.store(), (try? store.volume(id: record.volumeID))?.multiNode == true,
                (try? store.hasPrivateLayersToCollapse(volumeID: record.volumeID)) == true
            {
                store.collapsePrivateLayersInBackground(volumeID: record.volumeID)
            }
        }
    }

    /// Runs `takeOwnership` once at a time per volume, in the background, again and again while
    /// it fails for a reason that passes (the owner is down or busy), until the volume is here,
    /// the owner keeps it, or this node unstages it.
    func offerOwnership(_ volumeID: String) {
        handOvers.withLock { state in
            guard !state.stopped, state.running[volumeID] == nil else { return }
            // Registered under the lock the task's end takes to unregister itself.
            state.running[volumeID] = Task {
                defer { handOvers.withLock { _ = $0.running.removeValue(forKey: volumeID) } }
                var delay: Duration = .milliseconds(200)
                while registry[volumeID]?.remoteOwner != nil, !Task.isCancelled {
                    do {
                        try await takeOwnership(of: volumeID)
                        return
                    } catch where !Task.isCancelled {
                        logger.warning("could not take ownership of a volume yet", metadata: ["volumeId": "\(volumeID)", "error": "\(error)"])
                    } catch {
                        return
                    }
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
    }
}
