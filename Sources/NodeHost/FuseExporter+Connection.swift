import CFuse3
import Glibc
import KernelFiles
import Logging

/// A descriptor on the root of one FUSE mount, held from mount to stop. It keeps the filesystem
/// alive, and with it the filesystem's device number, which is also the FUSE connection's number
/// in fusectl (/sys/fs/fuse/connections/<number>). The kernel gives a number to another mount only
/// once the filesystem that had it is gone, so while the pin is held that fusectl entry is this
/// connection's, whoever unmounted what meanwhile. Checking mountinfo instead cannot work: a new
/// FUSE mount has its fusectl entry before it shows in mountinfo, and a mount in another mount
/// namespace (another container's) never shows in ours.
struct ConnectionPin: Sendable {
    let descriptor: Int32
    let major: UInt32
    let minor: UInt32

    /// The connection's name in fusectl: the kernel's dev_t (MKDEV, major << 20 | minor).
    var connectionNumber: UInt32 { (major << 20) | minor }

    /// Pins the filesystem now visible at `mountPoint`. O_PATH and a statx that may not sync ask
    /// the filesystem nothing, so this works on a connection nobody serves (a stat would wait).
    static func pin(_ mountPoint: String) throws -> ConnectionPin {
        let descriptor = try Syscall.open(mountPoint, Syscall.pathOnly | O_DIRECTORY)
        var major: UInt32 = 0
        var minor: UInt32 = 0
        guard strata_filesystem_device(descriptor, &major, &minor) == 0 else {
            let error = errno
            Syscall.close(descriptor)
            throw Syscall.failure("statx \(mountPoint)", errno: error)
        }
        return ConnectionPin(descriptor: descriptor, major: major, minor: minor)
    }

    /// Whether `mount` is the pinned filesystem (a pinned number names nothing else).
    func pins(_ mount: MountInfo) -> Bool {
        mount.major == major && mount.minor == minor
    }

    /// Aborts the pinned connection through fusectl when it is mounted (a missing fusectl does
    /// nothing): pending and future requests fail with ENOTCONN and the session's reads end.
    func abortConnection(in connections: String, logger: Logger) {
        let path = "\(connections)/\(connectionNumber)/abort"
        guard access(path, W_OK) == 0 else { return }
        do {
            try Syscall.writeText("1", to: path)
            logger.debug("aborted FUSE connection", metadata: ["device": "\(major):\(minor)"])
        } catch {
            logger.debug("could not abort FUSE connection", metadata: ["device": "\(major):\(minor)", "error": "\(error)"])
        }
    }

    /// Lets the filesystem go: once nothing else holds it, the kernel ends it and frees its number.
    func release() {
        Syscall.close(descriptor)
    }
}
