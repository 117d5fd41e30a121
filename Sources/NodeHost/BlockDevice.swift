import CFuse3
import Glibc

/// Block device queries shared by the attacher and the mounter.
enum BlockDevice {
    /// The device's size in bytes (BLKGETSIZE64).
    static func size(fd: Int32, device: String) throws -> UInt64 {
        var size: UInt64 = 0
        try Syscall.ioctl(fd, strata_blkgetsize64(), pointer: &size, "BLKGETSIZE64 \(device)")
        return size
    }

    static func size(of device: String) throws -> UInt64 {
        try Syscall.withFile(device, O_RDONLY) { try size(fd: $0, device: device) }
    }
}
