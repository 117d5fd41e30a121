import Glibc

/// One line of /proc/self/mountinfo.
public struct MountInfo: Equatable, Sendable {
    public var mountID: Int
    public var parentID: Int
    /// The device number of the mounted filesystem (for FUSE, the connection number).
    public var major: UInt32
    public var minor: UInt32
    /// The path inside the filesystem that is mounted here ("/" unless a bind of a subtree or file).
    public var root: String
    public var mountPoint: String
    public var mountOptions: [String]
    public var fsType: String
    public var source: String
    public var superOptions: [String]

    public var isReadOnly: Bool { mountOptions.contains("ro") }

    /// The filesystem's device number as `stat` reports it in `st_dev` (glibc's makedev).
    public var deviceNumber: UInt64 { MountInfo.deviceNumber(major: major, minor: minor) }

    /// glibc's `makedev` (a macro Swift does not import).
    public static func deviceNumber(major: UInt32, minor: UInt32) -> UInt64 {
        let major = UInt64(major), minor = UInt64(minor)
        return ((major & 0xffff_f000) << 32) | ((major & 0x0000_0fff) << 8)
            | ((minor & 0xffff_ff00) << 12) | (minor & 0x0000_00ff)
    }

    public init(mountID: Int, parentID: Int, major: UInt32, minor: UInt32, root: String, mountPoint: String,
                mountOptions: [String], fsType: String, source: String, superOptions: [String]) {
        self.mountID = mountID
        self.parentID = parentID
        self.major = major
        self.minor = minor
        self.root = root
        self.mountPoint = mountPoint
        self.mountOptions = mountOptions
        self.fsType = fsType
        self.source = source
        self.superOptions = superOptions
    }
}

/// Reads the mount table of this process's mount namespace, to the end (see `KernelFile`): the
/// product's and the tests' one reader of mountinfo.
public enum MountTable {
    public struct Missing: Error, CustomStringConvertible {
        public let path: String
        public var description: String { "\(path) is missing; is /proc mounted?" }
    }

    public static func read(from path: String = "/proc/self/mountinfo") throws -> [MountInfo] {
        guard let text = try KernelFile.read(path) else { throw Missing(path: path) }
        return text.split(separator: "\n").compactMap { parse(String($0)) }
    }

    /// The mounts whose mount point is `path`, bottom first (the last one is visible).
    public static func mounts(at path: String) throws -> [MountInfo] {
        let canonical = canonicalPath(path)
        return try read().filter { $0.mountPoint == canonical || $0.mountPoint == path }
    }

    /// Whether anything is mounted at `path`.
    public static func isMountPoint(_ path: String) -> Bool {
        ((try? mounts(at: path)) ?? []).isEmpty == false
    }

    /// The canonical absolute path, or the path as given when it cannot be resolved
    /// (a dead FUSE mount answers ENOTCONN to every lookup).
    static func canonicalPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Parses one mountinfo line; nil when malformed.
    public static func parse(_ line: String) -> MountInfo? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator >= 6,
              fields.count >= separator + 3,
              let mountID = Int(fields[0]), let parentID = Int(fields[1]) else { return nil }
        let numbers = fields[2].split(separator: ":")
        guard numbers.count == 2, let major = UInt32(numbers[0]), let minor = UInt32(numbers[1]) else { return nil }
        return MountInfo(
            mountID: mountID,
            parentID: parentID,
            major: major,
            minor: minor,
            root: unescape(fields[3]),
            mountPoint: unescape(fields[4]),
            mountOptions: fields[5].split(separator: ",").map(String.init),
            fsType: fields[separator + 1],
            source: unescape(fields[separator + 2]),
            superOptions: fields.count > separator + 3 ? fields[separator + 3].split(separator: ",").map(String.init) : []
        )
    }

    /// Undoes the kernel's octal escapes (\040 for space, \011 tab, \012 newline, \134 backslash).
    public static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        let source = Array(field.utf8)
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count,
               let value = UInt8(String(decoding: source[(index + 1)...(index + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
