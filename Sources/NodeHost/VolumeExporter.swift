/// Serves block backends as files a kernel block device can sit on: what the node's staging
/// logic needs of an exporter. `FuseExporter` is today's implementation; the protocol exists so
/// that the staging, recovery and handover logic can run over an in-memory exporter in tests
/// without root or /dev/fuse, and so that another transport (NBD, ublk) can come later.
///
/// Adding and removing are idempotent, as the staging logic retries them after crashes.
public protocol VolumeExporter: AnyObject, Sendable {
    /// Exports `backend` as the file `path(of: name)` and returns that path. Adding the same
    /// backend under the same name again returns the same path; another backend under a taken
    /// name is refused. `identity` fixes the inode and generation the file is served under.
    @discardableResult
    func add(name: String, backend: any BlockBackend, identity: ExportIdentity?) throws -> String
    /// Stops exporting `name`; refused with `busy` while a device still holds the file open.
    /// Removing a name that is not exported succeeds.
    func remove(name: String) throws
    /// Makes readers of the file (the block devices over it) see the backend's current size;
    /// returns the size they now see.
    @discardableResult
    func refreshSize(name: String) throws -> UInt64
    /// The path of an exported name (whether or not it is exported).
    func path(of name: String) -> String
    /// The exported names, sorted.
    var names: [String] { get }
    /// The inode and generation an exported name is served under, or nil when not exported.
    func identity(of name: String) -> ExportIdentity?
    /// Starts serving (after cleaning up whatever a crashed process left at the same place).
    func start() throws
    /// Stops serving; the exported files go away. Calling it again does nothing.
    func stop()
}

/// An exporter whose connection to the kernel can outlive this process: a keeper holds a
/// duplicate of its descriptor while no process serves it, and the next process resumes it
/// (see notes/fuse-restart.md). Kept apart from `VolumeExporter` because only a kernel
/// connection has a descriptor to hand over; an exporter without one is simply not resumed.
public protocol ResumableExporter: VolumeExporter {
    /// The descriptor of the running connection (owned by the exporter: duplicate it to keep it).
    var connectionDescriptor: Int32? { get }
    /// What the kernel negotiated at the connection's start, waiting up to `seconds` for it.
    func initParameters(waiting seconds: Double) -> FuseInitParameters?
    /// Whether another process's connection is there to be resumed.
    var hasMountToResume: Bool { get }
    /// Serves the live connection `descriptor` (taken from the keeper) instead of starting anew.
    func resume(descriptor: Int32, parameters: FuseInitParameters) throws
    /// Stops serving but leaves the connection for the next process (the keeper holds it).
    func suspend()
}

extension FuseExporter: ResumableExporter {
    /// Removes without force and with the default wait for the kernel's release: what staging
    /// logic wants (a file a device still holds stays exported).
    public func remove(name: String) throws {
        try remove(name: name, force: false)
    }
}
