import Foundation
import GRPCCore
import KernelFiles

/// What a request could leave behind on the host: mounts and files. Two captures around a call
/// that must write nothing compare equal.
struct HostFootprint: Equatable, CustomStringConvertible {
    /// Mount points of the mounts the footprint watches.
    var mounts: Set<String>
    /// Every file and directory under the watched directories, with its size (directories: -1,
    /// the SQLite catalog: 0).
    var files: [String: Int64]

    /// Watches every file under `directories`, the mounts under `scope`, and every mount outside
    /// /tmp (where a hostile path such as /etc or / would land). Other tests' mounts under /tmp
    /// come and go concurrently, so they are not watched; nor are the network namespaces the
    /// multi-node tests pin under /run/netns (no CSI request can make one).
    static func capture(directories: [String], scope: String) -> HostFootprint {
        let watched = mountPoints().filter { mountPoint in
            mountPoint == scope || mountPoint.hasPrefix(scope + "/")
                || !(mountPoint.hasPrefix("/tmp/") || mountPoint.hasPrefix("/run/netns/"))
        }
        return HostFootprint(mounts: Set(watched),
                             files: directories.reduce(into: [:]) { files, directory in listing(of: directory, into: &files) })
    }

    /// Mount points listed in /proc/self/mountinfo (octal escapes such as `\040` decoded).
    static func mountPoints() -> [String] {
        ((try? MountTable.read()) ?? []).map(\.mountPoint)
    }

    static func isMountPoint(_ path: String) -> Bool { mountPoints().contains(path) }

    /// What changed between `self` (before) and `after`, for a failure message.
    func difference(to after: HostFootprint) -> String {
        var lines: [String] = []
        for mount in after.mounts.subtracting(mounts).sorted() { lines.append("new mount \(mount)") }
        for mount in mounts.subtracting(after.mounts).sorted() { lines.append("mount gone \(mount)") }
        for (path, size) in after.files.sorted(by: { $0.key < $1.key }) where files[path] != size {
            lines.append(files[path] == nil ? "new file \(path)" : "changed \(path): \(files[path]!) → \(size) bytes")
        }
        for path in files.keys.sorted() where after.files[path] == nil { lines.append("removed \(path)") }
        return lines.joined(separator: "\n")
    }

    var description: String { "\(mounts.count) watched mounts, \(files.count) files" }

    private static func listing(of directory: String, into files: inout [String: Int64]) {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return }
        while let relative = enumerator.nextObject() as? String {
            let path = directory + "/" + relative
            var status = stat()
            guard lstat(path, &status) == 0 else { continue }
            // SQLite checkpoints its log whenever it likes; the store's own checks cover the catalog.
            let isCatalog = relative.split(separator: "/").last?.hasPrefix("catalog.sqlite") == true
            files[path] = (status.st_mode & S_IFMT) == S_IFDIR ? -1 : isCatalog ? 0 : Int64(status.st_size)
        }
    }
}

/// How a call ended: its gRPC code (nil for OK) and the status message the client saw.
struct CallOutcome: Sendable, CustomStringConvertible {
    let code: RPCError.Code?
    let message: String

    /// Runs `call` and records how it ended; an error that is not an `RPCError` is `.unknown`.
    static func of<T>(_ call: () async throws -> T) async -> CallOutcome {
        do {
            _ = try await call()
            return CallOutcome(code: nil, message: "")
        } catch let error as RPCError {
            return CallOutcome(code: error.code, message: error.message)
        } catch {
            return CallOutcome(code: .unknown, message: "\(error)")
        }
    }

    var description: String {
        guard let code else { return "OK" }
        return "\(code): \(message.utf8.count > 300 ? String(message.prefix(300)) + "… (\(message.utf8.count) bytes)" : message)"
    }
}
