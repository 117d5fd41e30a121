#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CFuse3

/// Bringing a filesystem or device to a clean point before a snapshot, and dropping mounts whose
/// device died (after a driver restart).
public enum Quiescing {
    /// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h (function-like macros
    /// do not import into Swift).
    private static let freezeRequest: UInt = 0xC004_5877
    private static let thawRequest: UInt = 0xC004_5878

    /// Flushes dirty pages and blocks new writes until `thaw`: the snapshot then holds a clean
    /// filesystem, not merely a crash-consistent one.
    public static func freeze(mountPoint: String) throws {
        try filesystemIoctl(mountPoint, freezeRequest, "freeze")
    }

    public static func thaw(mountPoint: String) throws {
        try filesystemIoctl(mountPoint, thawRequest, "thaw")
    }

    /// Writes a block device's dirty page cache down to it (what buffered writers were told is written).
    public static func flush(device: String) throws {
        let fd = open(device, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NodeHostError(.systemCall, "open \(device): \(String(cString: strerror(errno)))", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw NodeHostError(.systemCall, "fsync \(device): \(String(cString: strerror(errno)))", errno: errno) }
    }

    /// Detaches a mount even while it is busy or its device is gone (MNT_DETACH); nothing mounted is success.
    public static func detachMount(target: String) throws {
        guard umount2(target, Int32(MNT_DETACH)) == 0 || errno == EINVAL || errno == ENOENT else {
            throw NodeHostError(.systemCall, "umount -l \(target): \(String(cString: strerror(errno)))", errno: errno)
        }
    }

    private static func filesystemIoctl(_ mountPoint: String, _ request: UInt, _ what: String) throws {
        let fd = open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw NodeHostError(.systemCall, "open \(mountPoint): \(String(cString: strerror(errno)))", errno: errno) }
        defer { close(fd) }
        var argument: Int32 = 0
        guard strata_ioctl_ptr(fd, UInt(request), &argument) == 0 else {
            let code = errno
            // Thawing a filesystem that is not frozen is fine.
            if what == "thaw", code == EINVAL { return }
            throw NodeHostError(.systemCall, "\(what) \(mountPoint): \(String(cString: strerror(code)))", errno: code)
        }
    }
}
