import BlockStore
import CSIValidation
import Foundation
import Logging
import NodeHost
import Synchronization

/// Makes store volumes usable on this node: exports each staged volume as a file through FUSE,
/// puts a loop device over it, formats (only if blank) and mounts filesystems, and bind-mounts
/// them to their targets. Every step is idempotent; the registry is written before a step acts,
/// so a crash in between is finished or undone by `recover()`.
final class VolumeStager: Sendable {
    let exporter: FuseExporter
    let attacher: LoopAttacher
    let mounter: any Mounter
    let registry: StagingRegistry
    let context: DriverContext
    private let handles = Mutex<[String: VolumeHandle]>([:])
    let logger: Logger

    /// Thin volumes stay thin: ext4 must not zero its inode tables and journal up front.
    static let ext4FormatOptions = ["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]

    init(context: DriverContext, exporter: FuseExporter, attacher: LoopAttacher, mounter: any Mounter, registry: StagingRegistry) {
        self.context = context
        self.exporter = exporter
        self.attacher = attacher
        self.mounter = mounter
        self.registry = registry
        self.logger = context.configuration.logger
    }

    // MARK: - Stage and unstage

    func stage(_ requested: StagedVolume) throws {
        if let existing = registry[requested.volumeID] {
            guard existing.stagingPath == requested.stagingPath else {
                throw CSIError.failedPrecondition("volume \(requested.volumeID) is already staged at \(existing.stagingPath)")
            }
            guard existing.access == requested.access, existing.readOnly == requested.readOnly else {
                throw CSIError.alreadyExists("volume \(requested.volumeID) is staged at \(existing.stagingPath) with another capability")
            }
            try bringUp(existing)
            return
        }
        try registry.update(requested.volumeID) { $0 = requested }
        do {
            try bringUp(requested)
        } catch {
            try? tearDown(requested)
            try? registry.update(requested.volumeID) { $0 = nil }
            throw error
        }
    }

    /// Unstaging what is not staged succeeds (kubelet retries); unstaging with targets still
    /// published is refused so that no pod loses its disk underneath it.
    func unstage(volumeID: String, stagingPath: String) throws {
        guard let record = registry[volumeID] else { return }
        guard record.stagingPath == stagingPath else {
            throw CSIError.failedPrecondition("volume \(volumeID) is staged at \(record.stagingPath), not \(stagingPath)")
        }
        guard record.targets.isEmpty else {
            throw CSIError.failedPrecondition("volume \(volumeID) is still published at \(record.targets.keys.sorted().joined(separator: ", "))")
        }
        try tearDown(record)
        try registry.update(volumeID) { $0 = nil }
    }

    func isStaged(_ volumeID: String) -> Bool { registry[volumeID] != nil }

    /// Stops serving staged volumes (the registry keeps them for `recover()` after a restart).
    func shutDown() {
        exporter.stop()
        for handle in handles.withLock({ handles in defer { handles = [:] }; return Array(handles.values) }) {
            try? handle.close()
        }
    }

    /// Exports, attaches and (for filesystems) mounts; each part is skipped when already done.
    func bringUp(_ record: StagedVolume) throws {
        let device = try readWriteDevice(for: record.volumeID)
        guard case .filesystem(let requestedType, let mountFlags) = record.access else { return }
        if try mounter.isMountPoint(record.stagingPath) { return }
        let fsType = try ensureFilesystem(on: device, requested: requestedType, readOnly: record.readOnly)
        var options = mountFlags
        // Skip ext4's background inode-table zeroing, which would allocate every cluster it touches.
        if fsType == .ext4, !options.contains("init_itable") { options.append("noinit_itable") }
        try mounter.mount(source: device, target: record.stagingPath, fsType: fsType.rawValue, options: options, readOnly: record.readOnly)
    }

    /// Formats only a blank device; never reformats data.
    private func ensureFilesystem(on device: String, requested: String, readOnly: Bool) throws -> FilesystemType {
        let wanted = FilesystemType(rawValue: requested.isEmpty ? VolumeCapabilityRules.defaultFilesystem : requested) ?? .ext4
        guard let found = try mounter.probeFilesystem(device: device) else {
            guard !readOnly else { throw CSIError.failedPrecondition("the volume is blank and cannot be formatted read-only") }
            _ = try mounter.format(device: device, fsType: wanted, options: wanted == .ext4 ? Self.ext4FormatOptions : [])
            return wanted
        }
        guard let existing = FilesystemType(rawValue: found) else {
            throw CSIError.failedPrecondition("the volume holds \(found), not a filesystem Strata mounts (ext4 or xfs)")
        }
        guard requested.isEmpty || existing == wanted else {
            throw CSIError.failedPrecondition("the volume holds \(existing.rawValue), not the requested \(wanted.rawValue); it is never reformatted")
        }
        return existing
    }

    private func tearDown(_ record: StagedVolume) throws {
        if case .filesystem = record.access { try mounter.unmount(target: record.stagingPath) }
        let file = exporter.path(of: record.volumeID)
        for attachment in try attacher.attachments(backingFile: file) {
            _ = try attacher.detach(device: attachment.device)
        }
        try exporter.remove(name: record.volumeID)
        if let handle = handles.withLock({ $0.removeValue(forKey: record.volumeID) }) { try handle.close() }
    }

    /// The export file of a volume, opening the store volume and exporting it on first use.
    func exportedFile(for volumeID: String) throws -> String {
        if exporter.names.contains(volumeID) { return exporter.path(of: volumeID) }
        let store = try context.store()
        let handle = try store.open(volumeID: volumeID)
        do {
            let path = try exporter.add(name: volumeID, backend: StoreVolumeBackend(handle: handle))
            handles.withLock { $0[volumeID] = handle }
            return path
        } catch {
            try? handle.close()
            throw error
        }
    }

    func readWriteDevice(for volumeID: String) throws -> String {
        let file = try exportedFile(for: volumeID)
        if let device = try attacher.device(backingFile: file, readOnly: false) { return device }
        return try attacher.attach(file: file, readOnly: false, directIO: true)
    }

    /// A read-only bind of a device node still lets writes through, so read-only block targets
    /// get a read-only loop device of their own.
    func readOnlyDevice(for volumeID: String) throws -> String {
        let file = try exportedFile(for: volumeID)
        if let device = try attacher.device(backingFile: file, readOnly: true) { return device }
        return try attacher.attach(file: file, readOnly: true, directIO: true)
    }
}
