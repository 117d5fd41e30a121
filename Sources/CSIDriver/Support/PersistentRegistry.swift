import CSIValidation
import Foundation
import NodeHost
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
    /// The inode and generation the volume is exported under: fixed at staging, so that a
    /// successor serving the same FUSE connection means the same file by them.
    var export: ExportIdentity? = nil
    /// 128 random bits, given to the FUSE keeper with the connection's descriptor: a descriptor
    /// the keeper hands back is served for this volume only if its cookie matches.
    var cookie: String? = nil
    /// Set when the volume lives on another node (a multi-node volume staged here while its
    /// writable head is there): its I/O goes to that node, and a restart reaches it again.
    var remoteOwner: RemoteOwner? = nil
}

/// The node a remotely staged volume lives on, as it answered when this node attached.
struct RemoteOwner: Codable, Equatable, Sendable {
    var node: String
    var host: String
    var port: Int
    /// The ownership epoch every request carries.
    var epoch: UInt64
    var size: UInt64
}

/// A small map kept in a JSON file that is replaced atomically (write, fsync, rename, fsync the
/// directory): a crash leaves either the old or the new state, never a torn file.
final class PersistentRegistry<Entry: Codable & Equatable & Sendable>: Sendable {
    private let path: String
    private let entries: Mutex<[String: Entry]>

    init(directory: String, fileName: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        path = (directory as NSString).appendingPathComponent(fileName)
        var loaded: [String: Entry] = [:]
        if let data = FileManager.default.contents(atPath: path) {
            loaded = try JSONDecoder().decode([String: Entry].self, from: data)
        }
        entries = Mutex(loaded)
    }

    subscript(key: String) -> Entry? { entries.withLock { $0[key] } }

    var all: [Entry] { entries.withLock { Array($0.values) } }

    /// Applies `change` and persists the result before returning. A change that changes nothing
    /// (unpublishing what was never published, say) writes nothing.
    func update(_ key: String, _ change: (inout Entry?) throws -> Void) throws {
        try entries.withLock { entries in
            var entry = entries[key]
            try change(&entry)
            guard entry != entries[key] else { return }
            var next = entries
            next[key] = entry
            try persist(next)
            entries = next
        }
    }

    private func persist(_ state: [String: Entry]) throws {
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

/// Volumes staged on this node, by volume id.
typealias StagingRegistry = PersistentRegistry<StagedVolume>
