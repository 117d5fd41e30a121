#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import KernelFiles
import Testing

/// Whether this machine can run the tests that create real FUSE mounts, loop devices and
/// filesystems (the NodeHost device tests and the driver's node tests), and what such a test
/// must leave none of.
public enum NodeEnvironment {
    /// Why node tests cannot run here, or nil when everything they need is present.
    public static let missing: String? = {
        if geteuid() != 0 { return "node tests need root (mount, loop devices)" }
        if access("/dev/fuse", R_OK | W_OK) != 0 { return "node tests need /dev/fuse (missing or not accessible)" }
        if access("/dev/loop-control", R_OK | W_OK) != 0 { return "node tests need loop devices (/dev/loop-control)" }
        for tool in ["blkid", "mkfs.ext4", "mkfs.xfs", "resize2fs", "xfs_growfs", "blkdiscard"] {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].contains { access("\($0)/\(tool)", X_OK) == 0 }
            if !found { return "node tests need \(tool) (e2fsprogs, xfsprogs, util-linux)" }
        }
        return nil
    }()

    /// Whether node tests can run; prints why not when they cannot (for `.enabled(if:)`).
    public static var available: Bool {
        if let missing { print("skipping node tests: \(missing)") }
        return missing == nil
    }

    /// The comment a skipped suite shows.
    public static var skipReason: Comment {
        Comment(rawValue: "needs root, /dev/fuse, loop devices and e2fsprogs/xfsprogs: \(missing ?? "all present")")
    }

    /// CAP_SYS_RESOURCE: ext4 grows online only with it, which some sandboxes withhold even from root.
    public static let capSysResource = 24

    /// Whether this process has capability `number` in its effective set.
    public static func hasCapability(_ number: Int) -> Bool {
        guard let status = try? KernelFile.read("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return mask & (1 << UInt64(number)) != 0
    }

    public static var hasSysResource: Bool { hasCapability(capSysResource) }

    /// Mount points and loop devices that mention `path`: what a test must leave none of.
    public static func leftovers(under path: String) -> [String] {
        var found: [String] = []
        for mount in (try? MountTable.read()) ?? [] where mount.mountPoint.contains(path) || mount.source.contains(path) {
            found.append("mount: \(mount.mountPoint) (\(mount.fsType) from \(mount.source))")
        }
        for (device, backing) in loopBackingFiles() where backing.contains(path) {
            found.append("loop device \(device) → \(backing)")
        }
        return found
    }

    /// Every bound loop device (loopN) with the backing file sysfs shows for it.
    public static func loopBackingFiles() -> [(device: String, backing: String)] {
        let blocks = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
        return blocks.filter { $0.hasPrefix("loop") }.sorted().compactMap { device in
            guard let backing = try? KernelFile.readTrimmed("/sys/block/\(device)/loop/backing_file") else { return nil }
            return (device, backing)
        }
    }
}
