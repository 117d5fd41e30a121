/// Filesystems NodeHost can create and grow.
public enum FilesystemType: String, CaseIterable, Sendable {
    case ext4
    case xfs
}

/// What `format` did.
public enum FormatOutcome: Equatable, Sendable {
    /// The device was blank and now holds a new filesystem.
    case formatted
    /// The device already held a filesystem of the requested type; nothing was written.
    case alreadyFormatted
}

/// Space and inode counts of a mounted filesystem (for NodeGetVolumeStats).
public struct FilesystemStats: Equatable, Sendable {
    public var totalBytes: UInt64
    /// Bytes an unprivileged writer can still use.
    public var availableBytes: UInt64
    public var usedBytes: UInt64
    public var totalInodes: UInt64
    public var freeInodes: UInt64
    public var usedInodes: UInt64

    /// Public so that other `Mounter` implementations (the tests' in-memory one) can report.
    public init(totalBytes: UInt64, availableBytes: UInt64, usedBytes: UInt64, totalInodes: UInt64, freeInodes: UInt64, usedInodes: UInt64) {
        self.totalBytes = totalBytes
        self.availableBytes = availableBytes
        self.usedBytes = usedBytes
        self.totalInodes = totalInodes
        self.freeInodes = freeInodes
        self.usedInodes = usedInodes
    }
}

/// Mounting, formatting and growing filesystems on the node. Every operation is idempotent:
/// mounting what is already mounted there succeeds, unmounting what is not mounted succeeds,
/// formatting a device that already has the requested filesystem does nothing, and a device
/// with any other signature is never formatted.
public protocol Mounter: Sendable {
    /// Mounts the filesystem on `source` at `target` (created if missing). `options` are
    /// mount(8)-style words such as "noatime" or "discard".
    func mount(source: String, target: String, fsType: String, options: [String], readOnly: Bool) throws
    /// Bind-mounts `source` (a directory, or a device node or file) at `target`, creating a
    /// directory or an empty file there as needed; a read-only bind is remounted read-only.
    func bindMount(source: String, target: String, readOnly: Bool) throws
    /// Unmounts everything mounted at `target`; a path that is not a mount point is fine.
    func unmount(target: String) throws
    /// Detaches the mount at `target` even while it is busy or its device is gone (a lazy
    /// unmount: what a dead process left must go before it is mounted anew); a path that is not
    /// a mount point is fine.
    func detachLazily(target: String) throws
    func isMountPoint(_ path: String) throws -> Bool
    /// The visible mount at `path`, or nil when it is not a mount point.
    func mountInfo(for path: String) throws -> MountInfo?
    /// nil when the device is blank; otherwise what it holds (a filesystem type such as
    /// "ext4", a partition table, or "unknown data").
    func probeFilesystem(device: String) throws -> String?
    /// Creates a filesystem only on a blank device; see `FormatOutcome`. Throws `notBlank`
    /// when the device holds anything else.
    @discardableResult
    func format(device: String, fsType: FilesystemType, options: [String]) throws -> FormatOutcome
    /// Grows a mounted filesystem to fill its (already enlarged) device.
    func growFilesystem(device: String, mountPoint: String, fsType: FilesystemType) throws
    func filesystemStats(path: String) throws -> FilesystemStats
    func blockDeviceSize(device: String) throws -> UInt64
}
