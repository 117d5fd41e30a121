import Foundation
import KernelFiles
import NodeHost
import Synchronization

/// A `Mounter` in memory: a mount table of its own, and filesystems that are a signature in
/// the first bytes of a device (written through the fake attacher's device to the volume's
/// backend, so a restarted stager finds the volume formatted, as it would find ext4). Like
/// the real one, mounting what is mounted there already succeeds, another source there is
/// refused, a blank device does not mount, a device holding anything is never formatted, and
/// unmounting what is not mounted succeeds. Targets are created on disk as the real one does.
public final class FakeMounter: Mounter {
    /// One mount. A bind of a mount point takes what is mounted there at that moment, as the
    /// kernel's bind does, so `device` is the device the data lives on (nil: a plain directory).
    public struct Mount: Equatable, Sendable {
        public var target: String
        public var source: String
        public var device: String?
        public var fsType: String
        public var readOnly: Bool
        public var isBind: Bool
    }

    public let devices: FakeAttacher
    private let table = Mutex<[Mount]>([])
    private let formats = Mutex<[(device: String, fsType: FilesystemType)]>([])

    /// What a fake filesystem writes at the start of its device.
    static let signaturePrefix = Array("STRATA-FAKE-FILESYSTEM ".utf8)

    public init(devices: FakeAttacher) { self.devices = devices }

    public var mounts: [Mount] { table.withLock { $0 } }
    /// Every format that wrote a filesystem, in order.
    public var formatted: [(device: String, fsType: FilesystemType)] { formats.withLock { $0 } }

    /// The device whose bytes are seen at `path` (a mount point, or a bind of one), or nil.
    public func device(at path: String) -> String? {
        table.withLock { $0.last { $0.target == path }?.device }
    }

    // MARK: Mounter

    public func mount(source: String, target: String, fsType: String, options: [String], readOnly: Bool) throws {
        guard devices.file(behind: source) != nil else { throw NodeHostError(.systemCall, "stat \(source): no such device", errno: 2) }
        if let current = try mountInfo(for: target) {
            guard current.source == source else {
                throw NodeHostError(.alreadyExists, "\(target) is already a mount of \(current.source) (\(current.fsType))")
            }
            guard current.isReadOnly == readOnly else {
                throw NodeHostError(.alreadyExists, "\(target) is already mounted from \(source) with readOnly=\(current.isReadOnly)")
            }
            return
        }
        guard try probeFilesystem(device: source) == fsType else {
            throw NodeHostError(.systemCall, "mount \(source) on \(target) as \(fsType): wrong fs type", errno: 22)
        }
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        table.withLock {
            $0.append(Mount(target: target, source: source, device: source, fsType: fsType, readOnly: readOnly, isBind: false))
        }
        devices.hold(device: source)
    }

    public func bindMount(source: String, target: String, readOnly: Bool) throws {
        let origin: Mount
        if let mounted = table.withLock({ $0.last { $0.target == source } }) {
            origin = mounted
        } else if devices.file(behind: source) != nil {
            origin = Mount(target: source, source: source, device: source, fsType: "devtmpfs", readOnly: false, isBind: false)
        } else {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw NodeHostError(.systemCall, "stat \(source): no such file or directory", errno: 2)
            }
            origin = Mount(target: source, source: source, device: nil, fsType: "none", readOnly: false, isBind: false)
        }
        if let current = table.withLock({ $0.last { $0.target == target } }) {
            guard current.source == source, current.device == origin.device else {
                throw NodeHostError(.alreadyExists, "\(target) is already a mount of \(current.source) (\(current.fsType))")
            }
            guard current.readOnly == readOnly else {
                throw NodeHostError(.alreadyExists, "\(target) is already bound to \(source) with readOnly=\(current.readOnly)")
            }
            return
        }
        if origin.device == source {
            // A device node is bound onto a file.
            let parent = (target as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: target) { _ = FileManager.default.createFile(atPath: target, contents: nil) }
        } else {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        }
        table.withLock {
            $0.append(Mount(target: target, source: source, device: origin.device, fsType: origin.fsType, readOnly: readOnly, isBind: true))
        }
        if let device = origin.device { devices.hold(device: device) }
    }

    public func unmount(target: String) throws {
        let removed = table.withLock { mounts -> [Mount] in
            defer { mounts.removeAll { $0.target == target } }
            return mounts.filter { $0.target == target }
        }
        for mount in removed { if let device = mount.device { devices.release(device: device) } }
    }

    public func detachLazily(target: String) throws {
        let removed = table.withLock { mounts -> Mount? in
            guard let last = mounts.lastIndex(where: { $0.target == target }) else { return nil }
            return mounts.remove(at: last)
        }
        if let device = removed?.device { devices.release(device: device) }
    }

    /// Whether the mount seen at `path` is read-only; nil when nothing is mounted there.
    public func isReadOnly(at path: String) -> Bool? {
        table.withLock { $0.last { $0.target == path }?.readOnly }
    }

    public func isMountPoint(_ path: String) throws -> Bool { try mountInfo(for: path) != nil }

    public func mountInfo(for path: String) throws -> MountInfo? {
        table.withLock { mounts in
            guard let index = mounts.lastIndex(where: { $0.target == path }) else { return nil }
            let mount = mounts[index]
            return MountInfo(
                mountID: index + 1, parentID: 0, major: 0, minor: 0, root: "/", mountPoint: mount.target,
                mountOptions: [mount.readOnly ? "ro" : "rw"], fsType: mount.fsType, source: mount.source, superOptions: [])
        }
    }

    public func probeFilesystem(device: String) throws -> String? {
        var head = [UInt8](repeating: 0, count: 4096)
        let backend = try backend(of: device)
        try head.withUnsafeMutableBytes { try backend.read(into: $0, at: 0) }
        if head.allSatisfy({ $0 == 0 }) { return nil }
        guard head.starts(with: Self.signaturePrefix) else { return "unknown data" }
        let name = head.dropFirst(Self.signaturePrefix.count).prefix { $0 != 0 }
        return String(decoding: name, as: UTF8.self)
    }

    @discardableResult
    public func format(device: String, fsType: FilesystemType, options: [String]) throws -> FormatOutcome {
        if let found = try probeFilesystem(device: device) {
            guard found == fsType.rawValue else {
                throw NodeHostError(.notBlank, "\(device) holds \(found); refusing to format it as \(fsType.rawValue)")
            }
            return .alreadyFormatted
        }
        let signature = Self.signaturePrefix + Array(fsType.rawValue.utf8) + [0]
        try signature.withUnsafeBytes { try backend(of: device).write($0, at: 0) }
        try backend(of: device).flush()
        formats.withLock { $0.append((device, fsType)) }
        return .formatted
    }

    public func growFilesystem(device: String, mountPoint: String, fsType: FilesystemType) throws {
        guard self.device(at: mountPoint) == device else { throw NodeHostError(.notFound, "\(device) is not mounted at \(mountPoint)") }
    }

    /// The device's size, all free: a fake filesystem holds no files.
    public func filesystemStats(path: String) throws -> FilesystemStats {
        guard let device = device(at: path) else { throw NodeHostError(.notFound, "\(path) is not a mounted filesystem") }
        let size = try backend(of: device).size
        return FilesystemStats(totalBytes: size, availableBytes: size, usedBytes: 0, totalInodes: 1024, freeInodes: 1024, usedInodes: 0)
    }

    public func blockDeviceSize(device: String) throws -> UInt64 { try backend(of: device).size }

    private func backend(of device: String) throws -> any BlockBackend {
        guard let file = devices.file(behind: device) else { throw NodeHostError(.notFound, "\(device) is not attached") }
        return try file.liveBackend()
    }
}
