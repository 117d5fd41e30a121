import Foundation
import NodeHost

/// Coming back after a restart, and holding volumes still while they are snapshotted.
extension VolumeStager {
    /// Brings back every volume the registry says is staged: kubelet will not stage it again.
    ///
    /// The previous process's FUSE connection died with it, and with it every loop device over
    /// its files; the loop driver cannot give a read-write device a new backing file. So the old
    /// mounts are detached, the old devices released, and the volume exported, attached, mounted
    /// and bound to its targets anew. Host paths work again at once; a running pod keeps the dead
    /// mount it was started with until it is restarted.
    func recover() {
        for record in registry.all {
            do {
                for target in record.targets.keys { try mounter.detachLazily(target: target) }
                if case .filesystem = record.access { try mounter.detachLazily(target: record.stagingPath) }
                // At this point nothing of this process backs the volume yet, so every loop device
                // over this export's file of that name is stale: on the dead export the kernel
                // shows it as `/<name>`, on this export as its path. Another driver's live export
                // of the same volume (a multi-node volume staged by two nodes of one host) is not
                // this process's to touch.
                let stale = ["/" + record.volumeID, exporter.path(of: record.volumeID)]
                for attachment in try attacher.attachments() where stale.contains(attachment.backingFile) {
                    _ = try attacher.detach(attachment)
                }
                try bringUp(record)
                for (target, readOnly) in record.targets.sorted(by: { $0.key < $1.key }) {
                    try bind(record, to: target, readOnly: readOnly)
                }
                if keeper != nil {
                    unhealthy.withLock {
                        $0[record.volumeID] = .cut("the volume's FUSE connection was lost while no driver ran (did the FUSE keeper restart?); host paths work again, but pods started before must be restarted")
                    }
                }
                logger.notice("restored staged volume", metadata: [
                    "volumeId": "\(record.volumeID)", "stagingTargetPath": "\(record.stagingPath)", "targets": "\(record.targets.count)",
                ])
            } catch {
                logger.error("could not restore staged volume", metadata: [
                    "volumeId": "\(record.volumeID)", "error": "\(error)",
                ])
            }
        }
    }

    /// Runs `body` (a snapshot) while the staged volumes among `volumeIDs` are at a clean point:
    /// filesystems frozen (dirty data written through, new writes held), block devices flushed.
    /// A filesystem that cannot be frozen is flushed instead: the store's snapshot is
    /// crash-consistent either way.
    func whileQuiesced<T>(_ volumeIDs: [String], _ body: () throws -> T) throws -> T {
        var frozen: [String] = []
        defer {
            for mountPoint in frozen.reversed() {
                do { try Quiescing.thaw(mountPoint: mountPoint) } catch {
                    logger.critical("could not thaw a frozen filesystem", metadata: ["mountPoint": "\(mountPoint)", "error": "\(error)"])
                }
            }
        }
        for volumeID in volumeIDs {
            guard let record = registry[volumeID] else { continue }
            let devices = try attacher.attachments(backingFile: exporter.path(of: volumeID)).filter { !$0.readOnly }.map(\.device)
            if case .filesystem = record.access, !record.readOnly {
                do {
                    try Quiescing.freeze(mountPoint: record.stagingPath)
                    frozen.append(record.stagingPath)
                    continue
                } catch {
                    logger.warning("could not freeze; flushing instead", metadata: ["volumeId": "\(volumeID)", "error": "\(error)"])
                }
            }
            for device in devices { try Quiescing.flush(device: device) }
        }
        return try body()
    }
}
