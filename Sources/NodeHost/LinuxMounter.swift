import Foundation
import Glibc
import KernelFiles
import Logging

/// `Mounter` with mount(2)/umount2(2), /proc/self/mountinfo, blkid, mkfs.ext4, mkfs.xfs,
/// resize2fs and xfs_growfs.
public struct LinuxMounter: Mounter {
    /// Adds "nouuid" when mounting xfs: clones of one snapshot share a filesystem UUID, and
    /// xfs refuses to mount a second filesystem with a UUID already mounted.
    public var xfsNoUUID: Bool
    /// When set, mounts, binds, unmounts and the targets created for them only ever land inside
    /// this directory (kubelet's). Paths are checked when a request arrives; this opens them
    /// again through the kernel's confinement (`ConfinedDirectory`) and mounts through the open
    /// descriptor, so a symbolic link swapped into the path in between cannot send them elsewhere.
    public var confinement: String?
    public var logger: Logger

    public init(xfsNoUUID: Bool = true, confinedTo confinement: String? = nil, logger: Logger = Logger(label: "strata.nodehost.mount")) {
        self.xfsNoUUID = xfsNoUUID
        self.confinement = confinement
        self.logger = logger
    }

    // MARK: Mounting

    public func mount(source: String, target: String, fsType: String, options: [String], readOnly: Bool) throws {
        let device = try Syscall.status(of: source)
        if let current = try mountInfo(for: target) {
            // Already mounted: fine when it is this device with the same access.
            let mounted = try Syscall.status(of: target)
            guard device.st_mode & S_IFMT == S_IFBLK, mounted.st_dev == device.st_rdev else {
                throw NodeHostError(.alreadyExists, "\(target) is already a mount of \(current.source) (\(current.fsType))")
            }
            guard current.isReadOnly == readOnly else {
                throw NodeHostError(.alreadyExists, "\(target) is already mounted from \(source) with readOnly=\(current.isReadOnly)")
            }
            return
        }
        try makeDirectories(target)
        var words = options
        if fsType == FilesystemType.xfs.rawValue && xfsNoUUID && !words.contains("nouuid") { words.append("nouuid") }
        var (flags, data) = try MountOptions.parse(words)
        if readOnly { flags |= UInt(MS_RDONLY) }
        try withPinnedTarget(target) { pinned, _ in
            try Syscall.mount(source: source, target: pinned, fsType: fsType, flags: flags, data: data.isEmpty ? nil : data)
        }
        logger.info("mounted", metadata: ["source": "\(source)", "target": "\(target)", "fsType": "\(fsType)", "readOnly": "\(readOnly)"])
    }

    public func bindMount(source: String, target: String, readOnly: Bool) throws {
        let origin = try Syscall.status(of: source)
        let isDirectory = origin.st_mode & S_IFMT == S_IFDIR
        if let current = try mountInfo(for: target) {
            let mounted = try Syscall.status(of: target)
            guard mounted.st_dev == origin.st_dev, mounted.st_ino == origin.st_ino else {
                throw NodeHostError(.alreadyExists, "\(target) is already a mount of \(current.source) (\(current.fsType))")
            }
            guard current.isReadOnly == readOnly else {
                throw NodeHostError(.alreadyExists, "\(target) is already bound to \(source) with readOnly=\(current.isReadOnly)")
            }
            return
        }
        try createTarget(target, directory: isDirectory)
        try withPinnedTarget(target) { pinned, _ in
            try Syscall.mount(source: source, target: pinned, fsType: nil, flags: UInt(MS_BIND), data: nil)
        }
        if readOnly {
            // MS_RDONLY is ignored on the first bind; it takes a remount of the bind. Keep the
            // flags the bind inherited (nosuid, nodev…), or the kernel may refuse to drop them.
            do {
                let inherited = try MountOptions.flags(of: target)
                try withPinnedTarget(target) { pinned, fd in
                    // Opened after the bind, the target is the bind's root: our source.
                    var opened = stat()
                    guard fstat(fd, &opened) == 0, opened.st_dev == origin.st_dev, opened.st_ino == origin.st_ino else {
                        throw NodeHostError(.alreadyExists, "\(target) changed under the bind mount; not remounting it")
                    }
                    try Syscall.mount(source: nil, target: pinned, fsType: nil,
                                      flags: UInt(MS_REMOUNT | MS_BIND | MS_RDONLY) | inherited, data: nil)
                }
            } catch {
                try? unmountOnce(target)
                throw error
            }
        }
        logger.info("bind-mounted", metadata: ["source": "\(source)", "target": "\(target)", "readOnly": "\(readOnly)"])
    }

    /// How long a busy mount is tried again before it is reported busy. A process may hold a
    /// mount only for a moment: a child between fork and exec holds copies of every descriptor
    /// of its parent (a program spawning helpers while it reads the device, kubelet, a runtime),
    /// and the mount is busy until that child execs. Seen in the suite: a NodeUnpublish failed
    /// EBUSY while another test of the same process was starting a program.
    static let busyPatience: Duration = .seconds(2)

    public func unmount(target: String) throws {
        let deadline = ContinuousClock.now + Self.busyPatience
        // Several mounts may be stacked on the target (a retried mount): remove them all.
        var unmounts = 0
        while unmounts < 16 {
            guard try mountInfo(for: target) != nil else { return }
            do {
                try unmountOnce(target)
                unmounts += 1
                logger.info("unmounted", metadata: ["target": "\(target)"])
            } catch let error as NodeHostError where error.errno == EINVAL || error.errno == ENOENT {
                return
            } catch let error as NodeHostError where error.errno == EBUSY && ContinuousClock.now < deadline {
                usleep(20_000)
            }
        }
        throw NodeHostError(.busy, "\(target) is still mounted after 16 unmounts")
    }

    public func detachLazily(target: String) throws {
        try Quiescing.detachMount(target: target)
    }

    public func isMountPoint(_ path: String) throws -> Bool {
        try mountInfo(for: path) != nil
    }

    public func mountInfo(for path: String) throws -> MountInfo? {
        try MountTable.mounts(at: path).last
    }

    /// Unmounts the top mount at `target`. umount2 cannot go through a descriptor of the mount
    /// itself (an open one keeps it busy), so it goes through one of its parent directory, opened
    /// inside the confinement, and does not follow the last name if it has become a link.
    private func unmountOnce(_ target: String) throws {
        guard let confined else {
            try Syscall.unmount(target, flags: Int32(UMOUNT_NOFOLLOW))
            return
        }
        try confined.withParent(of: target) { parent, name in
            try Syscall.unmount("/proc/self/fd/\(parent)/\(name)", flags: Int32(UMOUNT_NOFOLLOW))
        }
    }

    /// Opens `target` (O_PATH: no I/O, nothing asked of the filesystem, so a dead mount opens
    /// too; inside the confinement when there is one) and runs `body` with a path naming exactly
    /// what was opened (/proc/self/fd/N) and the descriptor.
    private func withPinnedTarget<T>(_ target: String, _ body: (String, Int32) throws -> T) throws -> T {
        let fd = try confined?.open(target, Syscall.pathOnly) ?? Syscall.openPath(target)
        defer { Syscall.close(fd) }
        return try body("/proc/self/fd/\(fd)", fd)
    }

    private var confined: ConfinedDirectory? { confinement.map(ConfinedDirectory.init) }

    private func makeDirectories(_ path: String) throws {
        if let confined { try confined.makeDirectories(path) } else { try Syscall.makeDirectories(path) }
    }

    private func createTarget(_ target: String, directory: Bool) throws {
        if directory { return try makeDirectories(target) }
        if let confined { return try confined.makeFile(target) }
        let parent = (target as NSString).deletingLastPathComponent
        if !parent.isEmpty { try Syscall.makeDirectories(parent) }
        let fd = try Syscall.open(target, O_WRONLY | O_CREAT, mode: 0o640)
        Syscall.close(fd)
    }

    // MARK: Filesystems

    public func probeFilesystem(device: String) throws -> String? {
        // Open it ourselves first: blkid answers "nothing found" (2) for a device it cannot
        // read, and "nothing found" is what allows formatting.
        let status = try Syscall.status(of: device)
        guard status.st_mode & S_IFMT == S_IFBLK || status.st_mode & S_IFMT == S_IFREG else {
            throw NodeHostError(.invalidArgument, "\(device) is not a block device")
        }
        let head = try Syscall.withFile(device, O_RDONLY) { fd in try Self.readHead(fd: fd, device: device) }
        let output = try Command.run("blkid", ["-p", "-o", "export", device])
        switch output.status {
        case 0:
            let values = Dictionary(
                output.standardOutput.split(separator: "\n").compactMap { line -> (String, String)? in
                    guard let equals = line.firstIndex(of: "=") else { return nil }
                    return (String(line[..<equals]), String(line[line.index(after: equals)...]))
                },
                uniquingKeysWith: { first, _ in first }
            )
            if let type = values["TYPE"] { return type }
            if let table = values["PTTYPE"] { return "\(table) partition table" }
            return "unknown signature"
        case 2:
            // No signature. Still refuse if the start of the device holds anything but zeros.
            return head.allSatisfy({ $0 == 0 }) ? nil : "unknown data"
        default:
            let detail = output.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
            if output.status == 8 { return "ambiguous signatures" }
            throw NodeHostError(.commandFailed, "blkid -p \(device) exited \(output.status): \(detail)")
        }
    }

    /// The first 128 KiB of a device.
    private static func readHead(fd: Int32, device: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 128 * 1024)
        var filled = 0
        while filled < bytes.count {
            let count = try bytes.withUnsafeMutableBytes { buffer in
                try Syscall.retrying("read \(device)") { pread(fd, buffer.baseAddress! + filled, buffer.count - filled, off_t(filled)) }
            }
            if count == 0 { break }
            filled += count
        }
        return Array(bytes[0..<filled])
    }

    @discardableResult
    public func format(device: String, fsType: FilesystemType, options: [String]) throws -> FormatOutcome {
        if let found = try probeFilesystem(device: device) {
            if found == fsType.rawValue {
                logger.info("already formatted; not formatting", metadata: ["device": "\(device)", "fsType": "\(found)"])
                return .alreadyFormatted
            }
            throw NodeHostError(.notBlank, "\(device) holds \(found); refusing to format it as \(fsType.rawValue)")
        }
        switch fsType {
        case .ext4: try Command.check("mkfs.ext4", ["-F", "-q"] + options + [device])
        case .xfs: try Command.check("mkfs.xfs", ["-f", "-q"] + options + [device])
        }
        logger.info("formatted", metadata: ["device": "\(device)", "fsType": "\(fsType.rawValue)"])
        return .formatted
    }

    public func growFilesystem(device: String, mountPoint: String, fsType: FilesystemType) throws {
        switch fsType {
        case .ext4: try Command.check("resize2fs", [device])
        case .xfs: try Command.check("xfs_growfs", ["-d", mountPoint])
        }
        logger.info("filesystem grown", metadata: ["device": "\(device)", "mountPoint": "\(mountPoint)"])
    }

    public func filesystemStats(path: String) throws -> FilesystemStats {
        let status = try Syscall.filesystemStatus(of: path)
        let unit = UInt64(status.f_frsize)
        let blocks = UInt64(status.f_blocks), free = UInt64(status.f_bfree)
        let inodes = UInt64(status.f_files), freeInodes = UInt64(status.f_ffree)
        return FilesystemStats(
            totalBytes: blocks * unit,
            availableBytes: UInt64(status.f_bavail) * unit,
            usedBytes: (blocks - min(free, blocks)) * unit,
            totalInodes: inodes,
            freeInodes: freeInodes,
            usedInodes: inodes - min(freeInodes, inodes)
        )
    }

    public func blockDeviceSize(device: String) throws -> UInt64 {
        try BlockDevice.size(of: device)
    }
}
