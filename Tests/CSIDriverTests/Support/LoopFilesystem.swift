#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import StrataTestSupport

/// A small ext4 filesystem in an image file, on a loop device of its own, mounted under a
/// temporary directory. `tearDown()` unmounts it and detaches the device; call it in a `defer`.
final class LoopFilesystem: @unchecked Sendable {
    let directory: TemporaryDirectory
    let device: String
    let mountPoint: String

    /// Nil, with the reason printed, where the host cannot do it (not root, no loop devices).
    static func makeIfPossible(mebibytes: Int) throws -> LoopFilesystem? {
        guard geteuid() == 0 else {
            print("skipped: a loop-mounted filesystem needs root")
            return nil
        }
        guard FileManager.default.fileExists(atPath: "/dev/loop-control") else {
            print("skipped: no /dev/loop-control on this host")
            return nil
        }
        return try LoopFilesystem(mebibytes: mebibytes)
    }

    private init(mebibytes: Int) throws {
        directory = try TemporaryDirectory()
        let image = directory.path + "/disk.img"
        mountPoint = directory.path + "/mnt"
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(mebibytes) << 20) == 0 else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        // No blocks reserved for root: the test runs as root and must meet a really full disk.
        try ExternalTool.run("mkfs.ext4", ["-q", "-F", "-m", "0", "-E", "nodiscard", image])
        device = try ExternalTool.run("losetup", ["--find", "--show", image]).trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            try ExternalTool.run("mount", ["-t", "ext4", device, mountPoint])
        } catch {
            _ = try? ExternalTool.run("losetup", ["-d", device])
            throw error
        }
    }

    /// Unmounts (retrying while a closing file keeps it busy, lazily as a last resort) and
    /// detaches the loop device. Returns what went wrong, nil when nothing did: a lazy unmount
    /// (naming the processes that still had files open on the filesystem), or a device still
    /// attached 10 s after the detach.
    @discardableResult
    func tearDown() -> String? {
        var problems: [String] = []
        for attempt in 0..<50 where HostFootprint.isMountPoint(mountPoint) {
            if (try? ExternalTool.run("umount", [mountPoint])) != nil { break }
            if attempt == 49 {
                problems.append("busy for 5 s, unmounted lazily; files open on it: \(Self.openFiles(under: mountPoint))")
                _ = try? ExternalTool.run("umount", ["-l", mountPoint])
            }
            usleep(100_000)
        }
        _ = try? ExternalTool.run("losetup", ["-d", device])
        // LOOP_CLR_FD only marks a device to be cleared at its last close when anyone else has it
        // open (Linux 5.19 on): a child another thread is spawning holds copies of this process's
        // descriptors until it execs, so one of the device (mount's or losetup's) can delay it.
        for _ in 0..<100 where isAttached { usleep(100_000) }
        if isAttached { problems.append("\(device) still attached 10 s after losetup -d") }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// "pid: path" for every descriptor of any process that points under `directory`.
    static func openFiles(under directory: String) -> [String] {
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return processes.filter { Int($0) != nil }.flatMap { pid -> [String] in
            let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            return descriptors.compactMap { descriptor in
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
                      target.hasPrefix(directory + "/") else { return nil }
                return "\(pid): \(target)"
            }
        }
    }

    /// Whether the device is still attached to anything (for leak checks).
    var isAttached: Bool {
        let name = (device as NSString).lastPathComponent
        return FileManager.default.fileExists(atPath: "/sys/block/\(name)/loop/backing_file")
    }
}
