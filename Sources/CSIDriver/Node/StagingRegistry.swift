import Foundation
import Synchronization

/// What the node has staged and published, kept on disk so a restarted driver can bring its
/// volumes back without kubelet staging them again.
struct StagedVolume: Codable, Equatable, Sendable {
    enum Access: Codable, Equatable, Sendable {
        case block
        case filesystem(type: String, mountFlags: [String])
    }

    var volumeID: String
    var stagingPath: String
    var access: Access
    var readOnly: Bool
    /// Target path → published read-only.
    var targets: [String: Bool] = [:]
}

/// The registry file is replaced atomically (write, fsync, rename, fsync the directory): a crash
/// leaves either the old or the new state, never a torn file.
final class StagingRegistry: Sendable {
    private let path: String
    private let volumes: Mutex<[String: StagedVolume]>

    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        path = (directory as NSString).appendingPathComponent("staged-volumes.json")
        var loaded: [String: StagedVolume] = [:]
        if let data = FileManager.default.contents(atPath: path) {
            loaded = try JSONDecoder().decode([String: StagedVolume].self, from: data)
        }
        volumes = Mutex(loaded)
    }

    subscript(volumeID: String) -> StagedVolume? { volumes.withLock { $0[volumeID] } }

    var all: [StagedVolume] { volumes.withLock { Array($0.values) } }

    /// Applies `change` and persists the result before returning.
    func update(_ volumeID: String, _ change: (inout StagedVolume?) -> Void) throws {
        try volumes.withLock { volumes in
            var entry = volumes[volumeID]
            change(&entry)
            var next = volumes
            next[volumeID] = entry
            try persist(next)
            volumes = next
        }
    }

    private func persist(_ state: [String: StagedVolume]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(state)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CSIError.internalError("cannot write \(temporary)")
        }
        try Self.fsync(path: temporary, directory: false)
        guard rename(temporary, path) == 0 else { throw CSIError.internalError("cannot replace \(path): errno \(errno)") }
        try Self.fsync(path: (path as NSString).deletingLastPathComponent, directory: true)
    }

    private static func fsync(path: String, directory: Bool) throws {
        let fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY)
        guard fd >= 0 else { throw CSIError.internalError("cannot open \(path) to sync it: errno \(errno)") }
        defer { close(fd) }
        guard Foundation.fsync(fd) == 0 else { throw CSIError.internalError("fsync \(path) failed: errno \(errno)") }
    }
}
