import BlockStore
import CSIValidation
import Foundation
import FuseKeeperProtocol
import Logging
import NodeHost
import Peering
import Synchronization

/// Makes store volumes usable on this node: exports each staged volume as a file through FUSE,
/// puts a loop device over it, formats (only if blank) and mounts filesystems, and bind-mounts
/// them to their targets. Every step is idempotent; the registry is written before a step acts,
/// so a crash in between is finished or undone by `recover()`.
final class VolumeStager: Sendable {
    let exporter: any VolumeExporter
    /// The exporter again when its connection can outlive this process (FUSE): only then can
    /// the keeper hold it across a restart.
    let resumable: (any ResumableExporter)?
    let attacher: any Attacher
    let mounter: any Mounter
    let backends: any VolumeBackendProvider
    let registry: StagingRegistry
    let context: DriverContext
    /// The backend of each exported volume.
    let opened = Mutex<[String: OpenedBackend]>([:])
    /// Volumes whose ownership this node is taking over now.
    /// The takeovers running in the background, one per volume; cancelled at shutdown (a
    /// takeover cut there resumes in the next process, as after a crash).
    let handOvers = Mutex(HandOverTasks())

    struct HandOverTasks {
        var running: [String: Task<Void, Never>] = [:]
        var stopped = false
    }
    /// Holds the FUSE connection across restarts of this process, when configured.
    let keeper: FuseKeeperClient?
    /// Volumes this process will not serve, with the reason (reported as their volume
    /// condition): their descriptor failed the identity check, or their connection was cut
    /// while no driver ran. Cleared by unstaging.
    let unhealthy = Mutex<[String: Unhealthy]>([:])
    let logger: Logger

    enum Unhealthy: Equatable {
        /// Never served by this process: the descriptor held for it is not provably its own.
        case refused(String)
        /// Served again from a new connection, but whatever used the old one (a pod) saw it die.
        case cut(String)

        var message: String {
            switch self {
            case .refused(let message), .cut(let message): message
            }
        }
    }

    /// Thin volumes stay thin: ext4 must not zero its inode tables and journal up front.
    static let ext4FormatOptions = ["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]

    init(
        context: DriverContext, exporter: any VolumeExporter, attacher: any Attacher, mounter: any Mounter,
        backends: any VolumeBackendProvider, registry: StagingRegistry
    ) {
        self.context = context
        self.exporter = exporter
        self.resumable = exporter as? any ResumableExporter
        self.attacher = attacher
        self.mounter = mounter
        self.backends = backends
        self.registry = registry
        self.logger = context.configuration.logger
        self.keeper = context.configuration.fuseKeeperSocket.map { FuseKeeperClient(socketPath: $0) }
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
        var requested = requested
        requested.export = ExportIdentity(inode: try freeInode(), generation: UInt64.random(in: 1...UInt64.max))
        requested.cookie = Self.newCookie()
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
        unhealthy.withLock { _ = $0.removeValue(forKey: volumeID) }
        if record.remoteOwner == nil { offerToRemoteStagers(volumeID) }
    }

    /// A multi-node volume of this node that another node still stages (a live migration ended
    /// there) should move to that node: tell it (a hint; it takes the volume over). Sent again
    /// on every peer check until the volume moved (`DriverContext.offerVolumesLetGo`).
    func offerToRemoteStagers(_ volumeID: String) {
        guard let peers = context.peers, let store = try? context.store(),
              let stagers = try? store.remoteStagers(ofVolume: volumeID), !stagers.isEmpty else { return }
        let owner = context.configuration.nodeID
        let epoch = (try? store.volume(id: volumeID))?.epoch ?? 0
        logger.notice("unstaged a volume another node still stages: offering it ownership", metadata: [
            "volumeId": "\(volumeID)", "from": "\(owner)", "to": "\(stagers.joined(separator: ","))", "epoch": "\(epoch)",
        ])
        Task { [logger] in
            for endpoint in await peers.directory.endpoints() where endpoint.nodeID.map(stagers.contains) == true {
                do {
                    _ = try await peers.directory.connector.withClient(endpoint) { client in
                        try await client.ownershipOffered(
                            .with { $0.volumeID = volumeID; $0.ownerNode = owner }, options: PeerClientPool.options(timeout: .seconds(5)))
                    }
                } catch {
                    logger.warning("could not offer a volume to the node that stages it", metadata: [
                        "volumeId": "\(volumeID)", "node": "\(endpoint)", "error": "\(error)",
                    ])
                }
            }
        }
    }

    func isStaged(_ volumeID: String) -> Bool { registry[volumeID] != nil }

    /// Stops serving staged volumes (the registry keeps them for a restart). With a keeper and
    /// volumes staged, the mount stays and the next process resumes it; otherwise it is unmounted.
    func shutDown() {
        let takeovers = handOvers.withLock { state in
            state.stopped = true
            return Array(state.running.values)
        }
        for takeover in takeovers { takeover.cancel() }
        if keeper != nil, !registry.all.isEmpty, let resumable { resumable.suspend() } else { exporter.stop() }
        for backend in opened.withLock({ opened in defer { opened = [:] }; return Array(opened.values) }) {
            try? backend.close()
        }
    }

    /// Exports, attaches and (for filesystems) mounts; each part is skipped when already done.
    func bringUp(_ record: StagedVolume) throws {
        if case .refused(let reason)? = unhealthy.withLock({ $0[record.volumeID] }) {
            throw CSIError.failedPrecondition("volume \(record.volumeID) is not served by this process: \(reason); unstage it first")
        }
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
            _ = try attacher.detach(attachment)
        }
        try exporter.remove(name: record.volumeID)
        if let keeper {
            do { try keeper.drop(volumeID: record.volumeID) } catch {
                logger.warning("could not tell the FUSE keeper to drop a volume's descriptor", metadata: ["volumeId": "\(record.volumeID)", "error": "\(error)"])
            }
        }
        if record.remoteOwner != nil, let store = try? context.store() {
            // A takeover that never completed leaves no copy here.
            try store.dropHandOverReplicas(ofVolume: record.volumeID)
        }
        if let backend = opened.withLock({ $0.removeValue(forKey: record.volumeID) }) {
            try backend.close()
            try backend.release()
        } else if record.remoteOwner != nil {
            // Exported by no process since (a restart that could not reach the owner): the
            // owner still records this node as staging the volume.
            try backends.open(record, fenced: {}).release()
        }
    }

    /// Why a staged volume cannot be served now, while that lasts.
    func backendProblem(of volumeID: String) -> String? {
        opened.withLock { $0[volumeID] }?.problem()
    }

    /// The export file of a volume, opening the store volume and exporting it on first use.
    func exportedFile(for volumeID: String, handingToKeeper: Bool = true) throws -> String {
        if exporter.names.contains(volumeID) { return exporter.path(of: volumeID) }
        if case .refused(let reason)? = unhealthy.withLock({ $0[volumeID] }) {
            throw CSIError.failedPrecondition("volume \(volumeID) is not served by this process: \(reason)")
        }
        guard let record = registry[volumeID] else { throw CSIError.failedPrecondition("volume \(volumeID) is not staged on this node") }
        // During a restart too (before this process serves anything): a handover cut short
        // must finish for the export's I/O to go on.
        let backend = try backends.open(record) { [weak self] in self?.offerOwnership(volumeID) }
        let path: String
        do {
            path = try exporter.add(name: volumeID, backend: backend.backend, identity: record.export)
            opened.withLock { $0[volumeID] = backend }
        } catch {
            try? backend.close()
            throw error
        }
        try recordIdentity(of: volumeID)
        if handingToKeeper { handToKeeper(volumeID) }
        return path
    }

    /// Registry entries written before identities were recorded get the exporter's choice.
    private func recordIdentity(of volumeID: String) throws {
        guard let record = registry[volumeID], record.export == nil || record.cookie == nil else { return }
        let identity = exporter.identity(of: volumeID)
        try registry.update(volumeID) { entry in
            entry?.export = identity
            if entry?.cookie == nil { entry?.cookie = Self.newCookie() }
        }
    }

    /// Gives the keeper a duplicate of the connection for this volume. A keeper that cannot be
    /// reached leaves the volume working, but a restart of this process would cut it.
    func handToKeeper(_ volumeID: String) {
        guard let keeper, let record = registry[volumeID], let identity = record.export, let cookie = record.cookie else { return }
        guard let resumable, let descriptor = resumable.connectionDescriptor, let parameters = resumable.initParameters(waiting: 5) else {
            logger.warning("no FUSE connection to hand to the keeper yet", metadata: ["volumeId": "\(volumeID)"])
            return
        }
        let entry = KeeperEntry(volumeID: volumeID, inode: identity.inode, cookie: cookie,
                                protocolMinor: parameters.protocolMinor, maxReadahead: parameters.maxReadahead)
        do {
            try keeper.hold(entry, descriptor: descriptor)
        } catch {
            logger.error("could not hand the volume's FUSE descriptor to the keeper: a restart of this process would cut it",
                         metadata: ["volumeId": "\(volumeID)", "error": "\(error)"])
        }
    }

    /// The lowest inode no staged or exported volume uses.
    private func freeInode() throws -> UInt64 {
        let taken = Set(registry.all.compactMap { $0.export?.inode } + exporter.names.compactMap { exporter.identity(of: $0)?.inode })
        guard let inode = ExportIdentity.inodes.first(where: { !taken.contains($0) }) else {
            throw CSIError.resourceExhausted("no free export inode: \(taken.count) volumes are staged")
        }
        return inode
    }

    static func newCookie() -> String {
        (0..<2).map { _ in
            let hex = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
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
