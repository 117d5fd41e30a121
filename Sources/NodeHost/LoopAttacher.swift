import CFuse3
import Foundation
import Glibc
import Logging

/// Attaches files to loop devices with the loop driver's ioctls: LOOP_CTL_GET_FREE for a free
/// device, LOOP_CONFIGURE to bind it in one step (LOOP_SET_FD + LOOP_SET_STATUS64 on kernels
/// before 5.8). Devices are attached without autoclear: they outlive this process, attaching
/// again finds them (`device(backingFile:)`), and after a crash of the FUSE exporter the dead
/// ones are found by filesystem (`attachments(onFilesystem:)`) to be torn down.
public struct LoopAttacher: Attacher {
    /// Logical block size of new devices (512 suits every filesystem; 4096 avoids sub-page I/O).
    public var blockSize: UInt32
    /// Where device nodes live; missing nodes (in containers) are created here with mknod.
    public var deviceDirectory: String
    /// Readahead set on new devices, in KiB (nil: the kernel's 128). Buffered sequential reads
    /// (and filesystems on the device) send requests this large to the FUSE export; 1 MiB
    /// matches its largest request and doubled buffered read throughput in our measurements.
    public var readAheadKiB: Int?
    public var logger: Logger

    private static let sysBlock = "/sys/block"

    public init(blockSize: UInt32 = 512, deviceDirectory: String = "/dev", readAheadKiB: Int? = 1024,
                logger: Logger = Logger(label: "strata.nodehost.loop")) {
        self.blockSize = blockSize
        self.deviceDirectory = deviceDirectory
        self.readAheadKiB = readAheadKiB
        self.logger = logger
    }

    // MARK: Attacher

    /// A file may have one read-write and one read-only device (for a read-only publish of a
    /// block volume: a read-only bind of a device node does not stop writes to the device).
    /// The two have separate page caches; buffered readers of the read-only one may see stale
    /// blocks while the other is written.
    public func attach(file: String, readOnly: Bool, directIO: Bool) throws -> String {
        let file = Syscall.canonicalPath(file)
        // The file must be reachable, so that an existing device is matched by inode too.
        _ = try Syscall.status(of: file)
        if let existing = try attachments(backingFile: file).first(where: { $0.readOnly == readOnly }) {
            return existing.device
        }
        // Another process may take the device between GET_FREE and CONFIGURE: then try again.
        for _ in 0..<16 {
            let number = try freeDeviceNumber()
            let device = try deviceNode(number: number)
            do {
                try bind(device: device, to: file, readOnly: readOnly, directIO: directIO)
            } catch let error as NodeHostError where error.code == .busy {
                continue
            }
            if let readAheadKiB {
                // Best effort: /sys may be read-only in a container.
                do {
                    try Syscall.writeText("\(readAheadKiB)", to: "\(Self.sysBlock)/loop\(number)/queue/read_ahead_kb")
                } catch {
                    logger.debug("could not set readahead", metadata: ["device": "\(device)", "error": "\(error)"])
                }
            }
            let attached = try attachment(number: number)
            logger.info("attached loop device", metadata: [
                "device": "\(device)", "file": "\(file)", "readOnly": "\(readOnly)", "directIO": "\(attached?.directIO ?? false)",
            ])
            return device
        }
        throw NodeHostError(.resourceExhausted, "no free loop device could be bound to \(file)")
    }

    /// Detaches whatever is bound to `device` now. A caller that found the device by its backing
    /// file should use `detach(_:)`: a number freed since (by an earlier detach, or on last
    /// close) may already serve another volume, and this would cut it.
    @discardableResult
    public func detach(device: String) throws -> Bool {
        try clear(device: device, expecting: nil)
    }

    /// Detaches `attachment` only if its device still serves the same backing file (same path,
    /// device and inode); a device that is free or serves another file now is left alone and
    /// counts as detached. Returns false when the kernel frees it on last close.
    @discardableResult
    public func detach(_ attachment: LoopAttachment) throws -> Bool {
        try clear(device: attachment.device, expecting: attachment)
    }

    /// Checks and clears through one open descriptor: while we hold the device open its binding
    /// cannot change (LOOP_CLR_FD by anyone else only marks it for autoclear on last close), so
    /// what LOOP_GET_STATUS64 showed is what LOOP_CLR_FD clears.
    private func clear(device: String, expecting expected: LoopAttachment?) throws -> Bool {
        guard let number = Self.number(of: device) else {
            throw NodeHostError(.invalidArgument, "\(device) is not a loop device path")
        }
        guard try Syscall.readText(Self.backingFilePath(number)) != nil else { return true }
        // In a container the node may be missing although the kernel has the device bound.
        if try Syscall.statusIfPresent(of: device) == nil, device == "\(deviceDirectory)/loop\(number)" {
            _ = try deviceNode(number: number)
        }
        let bound: LoopAttachment
        do {
            bound = try Syscall.withFile(device, O_RDONLY) { fd -> LoopAttachment in
                var info = loop_info64()
                try Syscall.ioctl(fd, UInt(LOOP_GET_STATUS64), pointer: &info, "LOOP_GET_STATUS64 \(device)")
                var bound = try attachment(number: number) ?? LoopAttachment(
                    device: device, number: number, backingFile: "", readOnly: false, directIO: false)
                bound.backingDevice = info.lo_device
                bound.backingInode = info.lo_inode
                if let expected, !Self.sameBackingFile(bound, expected) {
                    return bound
                }
                try Syscall.ioctl(fd, UInt(LOOP_CLR_FD), value: 0, "LOOP_CLR_FD \(device)")
                return bound
            }
        } catch let error as NodeHostError where error.errno == ENXIO || error.code == .notFound {
            return true  // not bound (any more)
        }
        if let expected, !Self.sameBackingFile(bound, expected) {
            logger.info("loop device serves another file now; left alone", metadata: [
                "device": "\(device)", "expected": "\(expected.backingFile)", "found": "\(bound.backingFile)",
            ])
            return true
        }
        // The driver lets go when the last opener closes; with no other opener that was us. A
        // free number may be bound again at once by someone else: only our file counts.
        let released = try attachment(number: number).map { !Self.sameBackingFile($0, bound) } ?? true
        if released {
            logger.info("detached loop device", metadata: ["device": "\(device)"])
        } else {
            logger.info("loop device still open; the kernel detaches it on last close", metadata: ["device": "\(device)"])
        }
        return released
    }

    /// Same backing file: same path as the kernel shows it and, where both are known, same
    /// device and inode numbers.
    static func sameBackingFile(_ one: LoopAttachment, _ other: LoopAttachment) -> Bool {
        guard one.backingFile == other.backingFile else { return false }
        guard let device = one.backingDevice, let inode = one.backingInode,
              let otherDevice = other.backingDevice, let otherInode = other.backingInode else { return true }
        return device == otherDevice && inode == otherInode
    }

    @discardableResult
    public func refreshSize(device: String) throws -> UInt64 {
        try Syscall.withFile(device, O_RDONLY) { fd in
            try Syscall.ioctl(fd, UInt(LOOP_SET_CAPACITY), value: 0, "LOOP_SET_CAPACITY \(device)")
            return try BlockDevice.size(fd: fd, device: device)
        }
    }

    public func device(backingFile: String) throws -> String? {
        let matches = try attachments(backingFile: Syscall.canonicalPath(backingFile))
        return (matches.first { !$0.readOnly } ?? matches.first)?.device
    }

    /// The device attached to this file with this access, if any.
    public func device(backingFile: String, readOnly: Bool) throws -> String? {
        try attachments(backingFile: Syscall.canonicalPath(backingFile)).first { $0.readOnly == readOnly }?.device
    }

    public func freeDeviceCount() throws -> Int {
        try Self.loopNumbers().filter { try Syscall.readText(Self.backingFilePath($0)) == nil }.count
    }

    // MARK: Inspection

    /// Every bound loop device.
    public func attachments() throws -> [LoopAttachment] {
        try Self.loopNumbers().compactMap { try attachment(number: $0) }
    }

    /// The attachments serving this very file: same path, and when the file can be examined,
    /// same device and inode (so a loop device left on a dead FUSE connection does not count).
    /// When the file cannot be examined (its FUSE connection is dead), every device showing
    /// that path is returned.
    public func attachments(backingFile file: String) throws -> [LoopAttachment] {
        let status = try? Syscall.status(of: file)
        return try attachments().filter { attachment in
            guard attachment.backingFile == file else { return false }
            guard let status, let device = attachment.backingDevice, let inode = attachment.backingInode else { return true }
            return device == UInt64(status.st_dev) && inode == UInt64(status.st_ino)
        }
    }

    /// Devices whose backing file lives on the filesystem with this device number (`st_dev`,
    /// `MountInfo.deviceNumber`): after a crash, the devices left on the dead FUSE connection.
    /// Their `backingFile` is then relative to that filesystem's root ("/name").
    public func attachments(onFilesystem device: UInt64) throws -> [LoopAttachment] {
        try attachments().filter { $0.backingDevice == device }
    }

    func attachment(number: Int) throws -> LoopAttachment? {
        guard var backing = try Syscall.readText(Self.backingFilePath(number)) else { return nil }
        if backing.hasSuffix("\n") { backing.removeLast() }
        let base = "\(Self.sysBlock)/loop\(number)"
        let device = "\(deviceDirectory)/loop\(number)"
        var attachment = LoopAttachment(
            device: device, number: number, backingFile: backing,
            readOnly: (try Syscall.readText("\(base)/ro"))?.hasPrefix("1") ?? false,
            directIO: (try Syscall.readText("\(base)/loop/dio"))?.hasPrefix("1") ?? false
        )
        if let info = try? status(device: device) {
            attachment.backingDevice = info.lo_device
            attachment.backingInode = info.lo_inode
        }
        return attachment
    }

    /// The name given at bind (LO_NAME_SIZE: the first 63 bytes of the path then attached). Unlike
    /// sysfs's backing_file it keeps the full path after the file's filesystem is detached.
    func boundName(number: Int) -> String? {
        guard let info = try? status(device: "\(deviceDirectory)/loop\(number)") else { return nil }
        return withUnsafeBytes(of: info.lo_file_name) { name in
            String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private func status(device: String) throws -> loop_info64 {
        try Syscall.withFile(device, O_RDONLY) { fd in
            var info = loop_info64()
            try Syscall.ioctl(fd, UInt(LOOP_GET_STATUS64), pointer: &info, "LOOP_GET_STATUS64 \(device)")
            return info
        }
    }

    // MARK: Binding

    private func bind(device: String, to file: String, readOnly: Bool, directIO: Bool) throws {
        let access = readOnly ? O_RDONLY : O_RDWR
        let backing = try Syscall.open(file, access)
        defer { Syscall.close(backing) }
        let loop = try Syscall.open(device, access)
        defer { Syscall.close(loop) }
        let flags = readOnly ? UInt32(LO_FLAGS_READ_ONLY) : 0
        var config = loop_config()
        config.fd = UInt32(backing)
        config.block_size = blockSize
        Self.setName(file, in: &config.info)
        // Direct I/O first; a kernel that refuses it for this file gets a buffered device.
        var refusal: NodeHostError?
        for attempt in directIO ? [flags | UInt32(LO_FLAGS_DIRECT_IO), flags] : [flags] {
            config.info.lo_flags = attempt
            do {
                try Syscall.ioctl(loop, UInt(LOOP_CONFIGURE), pointer: &config, "LOOP_CONFIGURE \(device)")
                return
            } catch let error as NodeHostError where error.errno == EINVAL || error.errno == ENOTTY {
                refusal = error
            }
        }
        // Kernels before 5.8 have no LOOP_CONFIGURE (ENOTTY or EINVAL): bind in steps.
        logger.debug("LOOP_CONFIGURE refused; using LOOP_SET_FD", metadata: ["device": "\(device)", "error": "\(refusal.map { "\($0)" } ?? "")"])
        try Syscall.ioctl(loop, UInt(LOOP_SET_FD), value: UInt(backing), "LOOP_SET_FD \(device)")
        do {
            // READ_ONLY follows the backing file's open mode here; SET_STATUS64 cannot set it.
            var info = loop_info64()
            Self.setName(file, in: &info)
            try Syscall.ioctl(loop, UInt(LOOP_SET_STATUS64), pointer: &info, "LOOP_SET_STATUS64 \(device)")
            if blockSize != 512 {
                try Syscall.ioctl(loop, UInt(LOOP_SET_BLOCK_SIZE), value: UInt(blockSize), "LOOP_SET_BLOCK_SIZE \(device)")
            }
            if directIO {
                _ = try? Syscall.ioctl(loop, UInt(LOOP_SET_DIRECT_IO), value: 1, "LOOP_SET_DIRECT_IO \(device)")
            }
        } catch {
            _ = strata_ioctl_int(loop, UInt(LOOP_CLR_FD), 0)
            throw error
        }
    }

    private static func setName(_ file: String, in info: inout loop_info64) {
        withUnsafeMutableBytes(of: &info.lo_file_name) { name in
            let bytes = Array(file.utf8.prefix(name.count - 1))
            name.copyBytes(from: bytes)
            name[bytes.count] = 0
        }
    }

    // MARK: Device numbers and nodes

    /// Asks /dev/loop-control for a free device number, creating a device if none is free.
    private func freeDeviceNumber() throws -> Int {
        let control = "\(deviceDirectory)/loop-control"
        if try Syscall.statusIfPresent(of: control) == nil {
            try Syscall.makeNode(control, mode: S_IFCHR | 0o600, device: strata_makedev(10, 237))
        }
        return try Syscall.withFile(control, O_RDWR) { fd in
            Int(try Syscall.ioctl(fd, UInt(LOOP_CTL_GET_FREE), value: 0, "LOOP_CTL_GET_FREE"))
        }
    }

    /// /dev/loopN, created with the numbers sysfs gives when the node is missing.
    private func deviceNode(number: Int) throws -> String {
        let path = "\(deviceDirectory)/loop\(number)"
        guard let numbers = try Syscall.readText("\(Self.sysBlock)/loop\(number)/dev") else {
            throw NodeHostError(.notFound, "loop device \(number) has no /sys/block entry")
        }
        let parts = numbers.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt32($0) }
        guard parts.count == 2 else { throw NodeHostError(.systemCall, "cannot parse \(numbers) for loop\(number)") }
        let expected = strata_makedev(parts[0], parts[1])
        if let status = try Syscall.statusIfPresent(of: path) {
            guard status.st_mode & S_IFMT == S_IFBLK, status.st_rdev == expected else {
                throw NodeHostError(.alreadyExists, "\(path) exists but is not block device \(parts[0]):\(parts[1])")
            }
        } else {
            logger.info("creating missing device node", metadata: ["path": "\(path)"])
            try Syscall.makeNode(path, mode: S_IFBLK | 0o660, device: expected)
        }
        return path
    }

    static func number(of device: String) -> Int? {
        guard let name = device.split(separator: "/").last, name.hasPrefix("loop") else { return nil }
        return Int(name.dropFirst(4))
    }

    static func loopNumbers() -> [Int] {
        Syscall.directoryEntries(sysBlock).compactMap { $0.hasPrefix("loop") ? Int($0.dropFirst(4)) : nil }.sorted()
    }

    static func backingFilePath(_ number: Int) -> String {
        "\(sysBlock)/loop\(number)/loop/backing_file"
    }
}
