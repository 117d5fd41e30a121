import CFuse3
import Glibc
import KernelFiles
import Logging

/// The inode and generation under which an export is served. Both must mean the same to every
/// process serving the connection: the kernel keeps using them across a restart.
public struct ExportIdentity: Sendable, Equatable, Codable {
    public var inode: UInt64
    public var generation: UInt64

    public init(inode: UInt64, generation: UInt64) {
        self.inode = inode
        self.generation = generation
    }

    /// The inodes an export may have.
    public static let inodes: Range<UInt64> = InodeTable.firstInode..<InodeTable.firstInode + UInt64(InodeTable.capacity)
}

/// What the kernel's FUSE_INIT said. A process resuming a connection replays it to libfuse: the
/// kernel negotiated once and will not again, so the successor must behave as it was told then.
public struct FuseInitParameters: Sendable, Equatable {
    public var protocolMinor: UInt32
    public var maxReadahead: UInt32

    public init(protocolMinor: UInt32, maxReadahead: UInt32) {
        self.protocolMinor = protocolMinor
        self.maxReadahead = maxReadahead
    }
}

/// Handing a live connection from one process to the next (see notes/fuse-restart.md): the
/// mount outlives the process as long as someone (the keeper) holds a duplicate of its
/// /dev/fuse descriptor; requests then wait in the kernel until a successor resumes.
extension FuseExporter {
    /// The /dev/fuse descriptor of the running session (owned by the session: duplicate it to keep it).
    public var connectionDescriptor: Int32? {
        state.withLock { state in state.phase == .running ? state.session.map { fuse_session_fd($0.pointer) } : nil }
    }

    /// The INIT parameters, waiting up to `seconds` for the kernel's INIT after a fresh mount.
    public func initParameters(waiting seconds: Double = 5) -> FuseInitParameters? {
        var waited = 0.0
        while true {
            if let parameters = state.withLock({ $0.initParameters }) { return parameters }
            if waited >= seconds { return nil }
            usleep(10_000)
            waited += 0.01
        }
    }

    /// Whether a Strata FUSE mount (another process's) is at `mountPoint`, for `resume`.
    public var hasMountToResume: Bool {
        (try? MountTable.mounts(at: mountPoint).last?.fsType) == Self.filesystemType
    }

    /// Whether this process took over a connection another left (rather than mounting).
    public var isResumed: Bool { state.withLock { $0.resumed } }

    /// Serves the live connection `descriptor` (a /dev/fuse descriptor of the Strata mount at
    /// `mountPoint`, taken from the keeper; the session owns it from now on) instead of mounting.
    /// Add the exports first, with their recorded identities: requests the kernel resends name
    /// them at once. Then asks the kernel to resend what the previous process had read but not
    /// answered (Linux 6.9 or later; on older kernels those requests stay blocked).
    public func resume(descriptor: Int32, parameters: FuseInitParameters) throws {
        Self.installWakeHandler
        let session: SessionPointer = try state.withLock { state in
            guard state.phase == .idle else { throw NodeHostError(.alreadyExists, "exporter at \(mountPoint) was already started") }
            guard let mount = try MountTable.mounts(at: mountPoint).last, mount.fsType == Self.filesystemType else {
                throw NodeHostError(.notFound, "no live \(Self.filesystemType) mount at \(mountPoint) to resume")
            }
            let userdata = Unmanaged.passRetained(self).toOpaque()
            guard let session = FuseSession.create(exporter: userdata, options: options) else {
                Unmanaged<FuseExporter>.fromOpaque(userdata).release()
                throw NodeHostError(.systemCall, "fuse_session_new failed for \(mountPoint) (see the libfuse log)")
            }
            // libfuse takes a descriptor it is given as /dev/fd/N and never mounts or unmounts.
            guard fuse_session_mount(session.pointer, "/dev/fd/\(descriptor)") == 0 else {
                fuse_session_destroy(session.pointer)
                Unmanaged<FuseExporter>.fromOpaque(userdata).release()
                throw NodeHostError(.systemCall, "libfuse refused the resumed descriptor \(descriptor)")
            }
            state.initParameters = parameters
            state.mount = mount
            state.pin = pinConnection(of: mount)
            state.resumed = true
            return session
        }
        // Outside the lock: libfuse calls `configure`, which takes it.
        strata_fuse_synthetic_init(session.pointer, parameters.protocolMinor, parameters.maxReadahead)
        state.withLock { state in
            state.session = session
            state.loop = FuseSession.runLoop(session, maxThreads: options.maxThreads, bufferSize: options.receiveBufferSize, logger: logger)
            state.phase = .running
        }
        let resend = strata_fuse_notify_resend(descriptor)
        if resend != 0 {
            logger.warning("the kernel refused FUSE_NOTIFY_RESEND (Linux 6.9 or later needed): requests in flight when the previous process died stay blocked",
                           metadata: ["errno": "\(-resend)"])
        }
        logger.notice("resumed the FUSE connection left by the previous process", metadata: [
            "mountPoint": "\(mountPoint)", "exports": "\(names.count)",
        ])
    }

    /// Stops serving without unmounting: the session loop ends (requests read but not answered
    /// stay with the kernel, which resends them to the successor), the mount stays, and the
    /// kernel queues new requests until someone resumes. Only safe while another process (the
    /// keeper) holds the connection's descriptor; otherwise the connection dies with the session.
    public func suspend() {
        Self.installWakeHandler
        let taken: (SessionPointer, LoopCompletion)? = state.withLock { state in
            guard state.phase == .running, let session = state.session, let loop = state.loop else { return nil }
            state.phase = .suspended
            state.session = nil
            state.pin?.release()  // the mount is left to the keeper and the next process
            state.pin = nil
            return (session, loop)
        }
        guard let (session, loop) = taken else { return }
        fuse_session_exit(session.pointer)
        // Workers blocked in read return with EINTR and see the exit; one busy with a request
        // answers it first.
        var waited = 0.0
        while !loop.isFinished {
            loop.wakeWorkers()
            if loop.wait(seconds: 0.05) { break }
            waited += 0.05
            if waited >= 10 {
                logger.error("FUSE session threads did not stop; leaking the session", metadata: ["mountPoint": "\(mountPoint)"])
                return
            }
        }
        fuse_session_destroy(session.pointer)
        Unmanaged.passUnretained(self).release()
        logger.notice("FUSE export suspended, mount left for the next process", metadata: ["mountPoint": "\(mountPoint)"])
    }

    private static let installWakeHandler: Void = {
        _ = strata_install_wake_handler()
    }()
}
