import BlockStore
import CSIValidation
import Foundation
import NodeHost

/// Publishing staged volumes to their targets, expanding them, and reporting on them.
extension VolumeStager {
    func publish(volumeID: String, stagingPath: String, targetPath: String, readOnly: Bool) throws {
        guard let record = registry[volumeID], record.stagingPath == stagingPath else {
            throw CSIError.failedPrecondition("volume \(volumeID) is not staged at \(stagingPath); call NodeStageVolume first")
        }
        if let publishedReadOnly = record.targets[targetPath], publishedReadOnly != readOnly {
            throw CSIError.alreadyExists("volume \(volumeID) is published at \(targetPath) with readonly=\(publishedReadOnly)")
        }
        try registry.update(volumeID) { $0?.targets[targetPath] = readOnly }
        do {
            try bind(record, to: targetPath, readOnly: readOnly)
        } catch {
            if record.targets[targetPath] == nil { try? registry.update(volumeID) { $0?.targets[targetPath] = nil } }
            throw error
        }
    }

    func bind(_ record: StagedVolume, to targetPath: String, readOnly: Bool) throws {
        switch record.access {
        case .filesystem:
            try mounter.bindMount(source: record.stagingPath, target: targetPath, readOnly: readOnly || record.readOnly)
        case .block:
            let readOnly = readOnly || record.readOnly
            let device = readOnly ? try readOnlyDevice(for: record.volumeID) : try readWriteDevice(for: record.volumeID)
            try mounter.bindMount(source: device, target: targetPath, readOnly: readOnly)
        }
    }

    /// Unmounts the target and removes it (kubelet and csi-sanity expect it gone).
    func unpublish(volumeID: String, targetPath: String) throws {
        try mounter.unmount(target: targetPath)
        try removeTarget(targetPath)
        guard let record = registry[volumeID], record.targets[targetPath] != nil else { return }
        try registry.update(volumeID) { $0?.targets[targetPath] = nil }
        if case .block = record.access, !(registry[volumeID]?.targets.values.contains(true) ?? false) {
            // The last read-only target is gone: release its read-only loop device.
            let file = exporter.path(of: volumeID)
            for attachment in try attacher.attachments(backingFile: file) where attachment.readOnly {
                _ = try attacher.detach(attachment)
            }
        }
    }

    private func removeTarget(_ path: String) throws {
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch CocoaError.fileNoSuchFile {
        } catch let error as NSError where error.domain == NSCocoaErrorDomain && error.code == NSFileNoSuchFileError {
        }
    }

    /// Grows the store volume if asked for more, then the export, the loop devices and the filesystem.
    func expand(volumeID: String, requiredBytes: UInt64) throws -> UInt64 {
        guard let record = registry[volumeID] else {
            throw CSIError.failedPrecondition("volume \(volumeID) is not staged on this node")
        }
        let store = try context.store()
        var size = try store.volume(id: volumeID).size
        if requiredBytes > size {
            // Node-local expansion: where no controller resized the volume, the node does.
            size = try store.expandVolume(id: volumeID, to: CapacityRequest.roundedUp(requiredBytes)).size
        }
        _ = try exporter.refreshSize(name: volumeID)
        for attachment in try attacher.attachments(backingFile: exporter.path(of: volumeID)) {
            _ = try attacher.refreshSize(device: attachment.device)
        }
        if case .filesystem = record.access {
            let device = try readWriteDevice(for: volumeID)
            let mounted = try mounter.mountInfo(for: record.stagingPath)
            let fsType = FilesystemType(rawValue: mounted?.fsType ?? "") ?? .ext4
            try mounter.growFilesystem(device: device, mountPoint: record.stagingPath, fsType: fsType)
        }
        return size
    }

    /// A volume served from its owner grew there to `size`: the link, the export and the loop
    /// devices over it take the new size, and so does the registry (for a restart). Block only:
    /// a multi-node volume has no filesystem to grow.
    func expandRemote(volumeID: String, to size: UInt64) throws -> UInt64 {
        guard let record = registry[volumeID], record.remoteOwner != nil else {
            throw CSIError.failedPrecondition("volume \(volumeID) is not staged on this node from another")
        }
        try registry.update(volumeID) { $0?.remoteOwner?.size = size }
        guard let resize = opened.withLock({ $0[volumeID] })?.resize else { return size }
        resize(size)
        _ = try exporter.refreshSize(name: volumeID)
        for attachment in try attacher.attachments(backingFile: exporter.path(of: volumeID)) {
            _ = try attacher.refreshSize(device: attachment.device)
        }
        return size
    }

    struct VolumeReport {
        var totalBytes: UInt64
        var availableBytes: UInt64?
        var usedBytes: UInt64?
        var inodes: (total: UInt64, free: UInt64, used: UInt64)?
        var abnormal: String?
        /// Where a multi-node volume lives, when healthy (see `VolumePlacement`).
        var placement: String?
    }

    /// Usage and health of a staged volume seen at `path` (its staging path or one of its targets).
    func report(volumeID: String, path: String) throws -> VolumeReport {
        guard let record = registry[volumeID], path == record.stagingPath || record.targets[path] != nil else {
            throw CSIError.notFound("volume \(volumeID) is not staged or published at \(path)")
        }
        if let problem = unhealthy.withLock({ $0[volumeID] }) {
            return VolumeReport(totalBytes: 0, abnormal: problem.message)
        }
        if let problem = backendProblem(of: volumeID) {
            return VolumeReport(totalBytes: 0, abnormal: problem)
        }
        guard exporter.names.contains(volumeID) else {
            return VolumeReport(totalBytes: 0, abnormal: "the volume's export is gone; restart the driver to re-export it")
        }
        // kubelet asks about every volume periodically: a keeper restarted under this process
        // gets the volume's descriptor again (a hold replaces what it held).
        handToKeeper(volumeID)
        let file = exporter.path(of: volumeID)
        guard let device = try attacher.device(backingFile: file, readOnly: false) else {
            return VolumeReport(totalBytes: 0, abnormal: "the volume's loop device is gone")
        }
        switch record.access {
        case .block:
            return VolumeReport(totalBytes: try mounter.blockDeviceSize(device: device), placement: placement(of: volumeID))
        case .filesystem:
            guard try mounter.isMountPoint(path) else {
                return VolumeReport(totalBytes: 0, abnormal: "\(path) is no longer mounted")
            }
            let stats = try mounter.filesystemStats(path: path)
            return VolumeReport(
                totalBytes: stats.totalBytes, availableBytes: stats.availableBytes, usedBytes: stats.usedBytes,
                inodes: (stats.totalInodes, stats.freeInodes, stats.usedInodes))
        }
    }

    /// Where a staged multi-node volume lives, as NodeGetVolumeStats says it: served from its
    /// owner (and whether ownership is moving here now), or owned here (and who else stages it).
    /// Nil for a single-node volume.
    func placement(of volumeID: String) -> String? {
        guard let record = registry[volumeID] else { return nil }
        if let owner = record.remoteOwner {
            return VolumePlacement.remoteMessage(owner: owner.node, epoch: owner.epoch, takingOver: isTakingOver(volumeID))
        }
        guard let store = try? context.store(), let volume = try? store.volume(id: volumeID), volume.multiNode else { return nil }
        let stagers = (try? store.remoteStagers(ofVolume: volumeID)) ?? []
        return VolumePlacement(volume, owner: context.nodeID, stagedOnOwner: true, remoteStagers: stagers).stagedHereMessage
    }

    /// Whether a takeover of `volumeID` runs now (its owner let go, or this node asks again).
    func isTakingOver(_ volumeID: String) -> Bool { handOvers.withLock { $0.running[volumeID] != nil } }
}
