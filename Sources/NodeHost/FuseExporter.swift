import CFuse3
import Glibc
import KernelFiles
import Logging
import Synchronization

/// Serves block backends to the kernel as regular files of one FUSE filesystem, so that a loop
/// device can sit on each. The filesystem is libfuse's low-level API run by a multi-threaded
/// loop on its own threads; files are opened in direct-I/O mode, so the kernel keeps no page
/// cache of its own for them (the block device above has one) and every read sees the backend.
///
/// Lifecycle: `start()` mounts (after lazily unmounting a stale mount a crashed process left
/// at the same place), `stop()` unmounts and waits for the threads. Call `stop()` before
/// dropping the exporter: the running session keeps it alive.
public final class FuseExporter: Sendable {
    /// Tuning for the FUSE session.
    public struct Options: Sendable {
        /// The largest read or write the kernel sends in one request (max_read, max_write, and
        /// max_pages); 1 MiB is libfuse 3's ceiling.
        public var maxTransferSize: Int
        /// Worker threads of the session loop.
        public var maxThreads: Int
        /// Asynchronous requests (loop direct I/O, readahead) the kernel keeps in flight.
        public var maxBackground: Int
        /// Seconds the kernel may cache names and attributes. Sizes only change through
        /// `refreshSize(name:)`, which invalidates explicitly, so this can be long.
        public var attributeTimeout: Double
        /// Where fusectl is mounted (systemd mounts it at /sys/fs/fuse/connections); a stop
        /// aborts a connection that stays busy through it.
        public var fuseConnectionsDirectory = "/sys/fs/fuse/connections"

        /// Each worker's receive buffer: the largest request (a write of `maxTransferSize`) and
        /// room for its headers.
        var receiveBufferSize: Int { maxTransferSize + 65536 }

        public init(maxTransferSize: Int = 1 << 20, maxThreads: Int = 16, maxBackground: Int = 64, attributeTimeout: Double = 3600) {
            self.maxTransferSize = maxTransferSize
            self.maxThreads = maxThreads
            self.maxBackground = maxBackground
            self.attributeTimeout = attributeTimeout
        }
    }

    /// The filesystem type as /proc/self/mountinfo shows it.
    public static let filesystemType = "fuse.strata"

    /// Where the filesystem is mounted; exported files are `<mountPoint>/<name>`.
    public let mountPoint: String
    let options: Options
    let logger: Logger
    let buffers: BufferPool
    let startTime: timespec
    let inodes = InodeTable()
    let state = Mutex(State())

    struct State: ~Copyable {
        var phase = Phase.idle
        var session: SessionPointer?
        /// Our mount as mountinfo showed it right after mounting (its device is the connection).
        var mount: MountInfo?
        /// Holds our filesystem, and so our connection's number, until `stop()` (see `ConnectionPin`).
        var pin: ConnectionPin?
        var replacedStaleMounts: [MountInfo] = []
        var loop: LoopCompletion?
        var byName: [String: ExportedFile] = [:]
        /// What the kernel's INIT said, once it came (or what a resumed connection was given).
        var initParameters: FuseInitParameters?
        /// Whether this process took over a live connection instead of mounting.
        var resumed = false
        /// Files removed by force while open, by inode: served until their last release.
        var orphans: [UInt64: ExportedFile] = [:]
    }

    enum Phase { case idle, running, suspended, stopped }

    public init(mountPoint: String, options: Options = Options(), logger: Logger = Logger(label: "strata.nodehost.fuse")) {
        var path = mountPoint
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.mountPoint = path
        self.options = options
        self.logger = logger
        self.buffers = BufferPool(bufferSize: options.maxTransferSize)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.startTime = now
    }

    // MARK: Exports

    /// Exports `backend` as `<mountPoint>/<name>` and returns that path. Adding the same
    /// backend under the same name again returns the same path; another backend under a
    /// taken name is refused. `identity` fixes the inode and generation (as recorded for a
    /// connection another process may resume); without it the lowest free inode is taken.
    @discardableResult
    public func add(name: String, backend: any BlockBackend, identity: ExportIdentity? = nil) throws -> String {
        try ExportedFile.validate(name: name)
        let session: SessionPointer? = try state.withLock { state in
            guard state.phase != .stopped else { throw NodeHostError(.notRunning, "exporter at \(mountPoint) is stopped") }
            if let existing = state.byName[name] {
                guard existing.backend === backend else {
                    throw NodeHostError(.alreadyExists, "\(name) is already exported with another backend")
                }
                return nil
            }
            let taken = Set(state.byName.values.map(\.inode)).union(state.orphans.keys)
            let chosen = identity ?? ExportIdentity(
                inode: (InodeTable.firstInode..<InodeTable.firstInode + UInt64(InodeTable.capacity)).first { !taken.contains($0) } ?? 0,
                generation: 1)
            guard InodeTable.contains(inode: chosen.inode) else {
                throw NodeHostError(.resourceExhausted, "no free inode for \(name) (at most \(InodeTable.capacity) exports)")
            }
            guard !taken.contains(chosen.inode) else {
                throw NodeHostError(.alreadyExists, "inode \(chosen.inode) is already exported under another name")
            }
            let file = ExportedFile(name: name, inode: chosen.inode, generation: chosen.generation, backend: backend)
            state.byName[name] = file
            inodes.insert(file)
            return state.session
        }
        // Outside the lock: the kernel may need our workers (which take it) to finish a lookup.
        if let session { invalidateEntry(name, session: session) }
        return path(of: name)
    }

    /// Stops exporting `name`. Refused with `busy` while the kernel holds the file open (a loop
    /// device is attached) unless `force`, in which case open handles keep working until
    /// released. The kernel sends the release of a closed file asynchronously, so a handle
    /// closed just before (by a detach) is waited for up to `releaseWait` seconds.
    /// Removing a name that is not exported succeeds.
    public func remove(name: String, force: Bool = false, releaseWait: Double = 2) throws {
        try ExportedFile.validate(name: name)
        var clock = timespec()
        clock_gettime(CLOCK_MONOTONIC, &clock)
        let deadline = Double(clock.tv_sec) + Double(clock.tv_nsec) / 1e9 + releaseWait
        while true {
            let outcome: Result<SessionPointer?, NodeHostError> = state.withLock { state in
                guard let file = state.byName[name] else { return .success(nil) }
                let handles = file.openHandles.load(ordering: .relaxed)
                if handles > 0 && !force {
                    return .failure(NodeHostError(.busy, "\(name) is open \(handles) time(s) (is a loop device still attached?)"))
                }
                state.byName[name] = nil
                if handles > 0 {
                    // Forced: open handles keep working (they name the inode) until released.
                    state.orphans[file.inode] = file
                } else {
                    inodes.remove(inode: file.inode)
                }
                return .success(state.session)
            }
            switch outcome {
            case .success(let session):
                if let session { invalidateEntry(name, session: session) }
                return
            case .failure(let busy):
                clock_gettime(CLOCK_MONOTONIC, &clock)
                if Double(clock.tv_sec) + Double(clock.tv_nsec) / 1e9 >= deadline { throw busy }
                usleep(10_000)
            }
        }
    }

    /// Makes the kernel see the backend's current size (after an online expansion): drops the
    /// cached attributes and asks again. Returns the size the kernel now reports.
    @discardableResult
    public func refreshSize(name: String) throws -> UInt64 {
        try ExportedFile.validate(name: name)
        let (session, file) = try state.withLock { state in
            guard let file = state.byName[name] else { throw NodeHostError(.notFound, "\(name) is not exported") }
            guard let session = state.session, state.phase == .running else {
                throw NodeHostError(.notRunning, "exporter at \(mountPoint) is not running")
            }
            return (session, file)
        }
        let result = fuse_lowlevel_notify_inval_inode(session.pointer, fuse_ino_t(file.inode), -1, 0)
        if result != 0 && result != -ENOENT {
            throw Syscall.failure("invalidate attributes of \(name)", errno: -result)
        }
        // The loop driver reads the inode's cached size, so make the kernel fetch it now.
        let attributes = try Syscall.status(of: path(of: name))
        return UInt64(attributes.st_size)
    }

    /// The path of an exported name (whether or not it is exported).
    public func path(of name: String) -> String {
        mountPoint == "/" ? "/\(name)" : "\(mountPoint)/\(name)"
    }

    /// The exported names, sorted.
    public var names: [String] {
        state.withLock { $0.byName.keys.sorted() }
    }

    /// True while the session loop is serving requests; false before `start()`, after
    /// `stop()`, or once the connection died (aborted, or the mount was forced away).
    public var isServing: Bool {
        state.withLock { state in
            guard state.phase == .running, let loop = state.loop else { return false }
            return !loop.isFinished
        }
    }

    /// The device number (as `stat` reports `st_dev`) of this exporter's filesystem; loop devices
    /// over its files report it as their backing device.
    public var filesystemDevice: UInt64? {
        state.withLock { $0.mount?.deviceNumber }
    }

    /// FUSE mounts a previous process left at `mountPoint`, lazily unmounted by `start()`. Loop
    /// devices still bound to their files (`LoopAttacher.attachments(onFilesystem:)` with their
    /// `deviceNumber`) fail all I/O and must be torn down and attached again.
    public var replacedStaleMounts: [MountInfo] {
        state.withLock { $0.replacedStaleMounts }
    }

    // MARK: Used by the FUSE callbacks

    func file(inode: UInt64) -> ExportedFile? {
        inodes[inode]
    }

    /// The inode and generation an exported name is served under.
    public func identity(of name: String) -> ExportIdentity? {
        state.withLock { state in state.byName[name].map { ExportIdentity(inode: $0.inode, generation: $0.generation) } }
    }

    /// The last handle of `file` was released: a file removed by force while open goes now.
    func didReleaseLastHandle(of file: ExportedFile) {
        state.withLock { state in
            guard state.orphans[file.inode] === file else { return }
            state.orphans[file.inode] = nil
            inodes.remove(inode: file.inode)
        }
    }

    func file(named name: String) -> ExportedFile? {
        state.withLock { $0.byName[name] }
    }

    func allFiles() -> [ExportedFile] {
        state.withLock { state in state.byName.values.sorted { $0.name < $1.name } }
    }

    private func invalidateEntry(_ name: String, session: SessionPointer) {
        let result = name.withCString { fuse_lowlevel_notify_inval_entry(session.pointer, fuse_ino_t(FUSE_ROOT_ID), $0, strlen($0)) }
        if result != 0 && result != -ENOENT {
            logger.debug("invalidating the entry \(name) failed", metadata: ["errno": "\(-result)"])
        }
    }

    // MARK: Lifecycle

    /// Mounts the filesystem and starts serving. A FUSE mount already at `mountPoint` (left by
    /// a crashed process) is lazily unmounted first; any other mount there is refused.
    public func start() throws {
        try state.withLock { state in
            guard state.phase == .idle else { throw NodeHostError(.alreadyExists, "exporter at \(mountPoint) was already started") }
            guard mountPoint.hasPrefix("/"), mountPoint != "/" else {
                throw NodeHostError(.invalidArgument, "the export mount point must be an absolute path other than /, got \(mountPoint)")
            }
            state.replacedStaleMounts = try removeStaleMounts()
            try Syscall.makeDirectories(mountPoint, mode: 0o700)
            let userdata = Unmanaged.passRetained(self).toOpaque()
            guard let session = FuseSession.create(exporter: userdata, options: options) else {
                Unmanaged<FuseExporter>.fromOpaque(userdata).release()
                throw NodeHostError(.systemCall, "fuse_session_new failed for \(mountPoint) (see the libfuse log)")
            }
            guard fuse_session_mount(session.pointer, mountPoint) == 0 else {
                fuse_session_destroy(session.pointer)
                Unmanaged<FuseExporter>.fromOpaque(userdata).release()
                throw NodeHostError(.systemCall, "mounting FUSE at \(mountPoint) failed (is /dev/fuse available? see the libfuse log)")
            }
            state.mount = try MountTable.mounts(at: mountPoint).last
            state.pin = pinConnection(of: state.mount)
            state.session = session
            state.loop = FuseSession.runLoop(session, maxThreads: options.maxThreads, bufferSize: options.receiveBufferSize, logger: logger)
            state.phase = .running
        }
        logger.info("FUSE export filesystem mounted", metadata: ["mountPoint": "\(mountPoint)"])
    }

    /// Unmounts and waits for the session threads, then frees the session. If a loop device
    /// still holds an exported file open, the connection is aborted (a forced unmount), that
    /// device fails I/O from then on, and the mount is detached lazily: detach devices first.
    /// Calling `stop()` again does nothing.
    public func stop() {
        let taken: (SessionPointer, MountInfo?, ConnectionPin?, LoopCompletion)? = state.withLock { state in
            defer { state.phase = .stopped }
            guard state.phase == .running, let session = state.session, let loop = state.loop else { return nil }
            state.session = nil
            defer { state.pin = nil }
            return (session, state.mount, state.pin, loop)
        }
        guard let (session, mount, pin, loop) = taken else { return }
        let open = allFiles().filter { $0.openHandles.load(ordering: .relaxed) > 0 }.map(\.name)
        if !open.isEmpty {
            logger.warning("FUSE export busy at stop; aborting the connection, open files fail from now on", metadata: ["open": "\(open)"])
        }
        if let mount, isOurs(mount) {
            // A forced unmount aborts a FUSE connection even when it stays busy (where fusectl
            // is missing, the only way); the pin keeps it busy anyway, so it is then detached.
            if !open.isEmpty { try? Syscall.unmount(mountPoint, flags: Int32(MNT_FORCE)) }
            try? Syscall.unmount(mountPoint, flags: Int32(MNT_DETACH))
        }
        // End the connection wherever its mount went (someone may have detached it): the pin keeps
        // the number ours, so the abort cannot land on another connection. Released, the
        // filesystem ends with its last user.
        pin?.abortConnection(in: options.fuseConnectionsDirectory, logger: logger)
        pin?.release()
        var waited = 0.0
        while !loop.wait(seconds: 0.2) {
            waited += 0.2
            if waited >= 10 {
                logger.error("FUSE session threads did not end; leaking the session", metadata: ["mountPoint": "\(mountPoint)"])
                return
            }
        }
        fuse_session_destroy(session.pointer)
        // Balances the retain taken in start(): libfuse will not call back any more.
        Unmanaged.passUnretained(self).release()
        logger.info("FUSE export filesystem stopped", metadata: ["mountPoint": "\(mountPoint)"])
    }

    /// Pins the filesystem at our mount point if it is `mount`; nil (and a warning) otherwise:
    /// then `stop()` can only abort by a forced unmount.
    func pinConnection(of mount: MountInfo?) -> ConnectionPin? {
        do {
            let pin = try ConnectionPin.pin(mountPoint)
            if let mount, pin.pins(mount) { return pin }
            pin.release()
            logger.warning("the filesystem at the export mount point is not the one mounted; not pinned", metadata: ["mountPoint": "\(mountPoint)"])
        } catch {
            logger.warning("could not pin the FUSE connection", metadata: ["mountPoint": "\(mountPoint)", "error": "\(error)"])
        }
        return nil
    }

    /// Whether the visible mount at our mount point is still the one we made.
    private func isOurs(_ mount: MountInfo) -> Bool {
        guard let top = try? MountTable.mounts(at: mountPoint).last else { return false }
        return top.major == mount.major && top.minor == mount.minor && top.fsType == mount.fsType
    }

    /// Lazily unmounts FUSE mounts left at our mount point by a previous process.
    private func removeStaleMounts() throws -> [MountInfo] {
        var removed: [MountInfo] = []
        for mount in try MountTable.mounts(at: mountPoint).reversed() {
            guard mount.fsType.hasPrefix("fuse") else {
                throw NodeHostError(.alreadyExists, "\(mountPoint) is already a \(mount.fsType) mount of \(mount.source)")
            }
            logger.warning("lazily unmounting a stale FUSE mount", metadata: [
                "mountPoint": "\(mountPoint)", "fsType": "\(mount.fsType)", "device": "\(mount.major):\(mount.minor)",
            ])
            // Still alive if a keeper holds its descriptor: nobody will serve it now, so make its
            // I/O fail rather than wait forever. Pinned first, so that the abort reaches this
            // connection even if the mount goes away meanwhile.
            let pin = try? ConnectionPin.pin(mountPoint)
            if let pin, pin.pins(mount) { pin.abortConnection(in: options.fuseConnectionsDirectory, logger: logger) }
            defer { pin?.release() }
            do {
                try Syscall.unmount(mountPoint, flags: Int32(MNT_DETACH))
            } catch let error as NodeHostError where error.errno == EINVAL {
                // Already gone.
            }
            removed.append(mount)
        }
        return removed
    }
}
