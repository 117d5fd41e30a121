import Foundation
import Glibc
import KernelFiles
import Testing

/// Whether this machine can run the tests that create real FUSE mounts, loop devices and
/// filesystems, and if not, why.
enum NodeEnvironment {
    static let missingRequirement: String? = {
        if geteuid() != 0 { return "not running as root" }
        if access("/dev/fuse", R_OK | W_OK) != 0 { return "/dev/fuse is missing or not accessible" }
        if access("/dev/loop-control", R_OK | W_OK) != 0 && access("/sys/block", R_OK) != 0 {
            return "no loop device support (/dev/loop-control)"
        }
        for tool in ["blkid", "mkfs.ext4", "mkfs.xfs", "resize2fs", "xfs_growfs", "blkdiscard"] {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].contains { access("\($0)/\(tool)", X_OK) == 0 }
            if !found { return "\(tool) is not installed" }
        }
        return nil
    }()

    static let capSysResource = 24

    /// Whether this process has a capability in its effective set.
    static func hasCapability(_ number: Int) -> Bool {
        guard let status = try? KernelFile.read("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
        return mask & (1 << UInt64(number)) != 0
    }

    static var canRunDeviceTests: Bool {
        if let reason = missingRequirement {
            print("NodeHostTests: skipping device tests: \(reason)")
            return false
        }
        return true
    }

    static var skipReason: Comment {
        Comment(rawValue: "needs root, /dev/fuse, loop devices and e2fsprogs/xfsprogs: \(missingRequirement ?? "all present")")
    }
}
