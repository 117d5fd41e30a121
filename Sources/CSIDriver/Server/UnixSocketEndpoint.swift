#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

/// The `--endpoint` a CSI driver listens on: a Unix domain socket, as kubelet and the sidecars expect.
public struct UnixSocketEndpoint: Sendable, Equatable, CustomStringConvertible {
    public let path: String

    /// Sun_path holds 108 bytes including the terminating NUL.
    static let maximumPathLength = 107

    /// Accepts `unix:///absolute/path`, `unix:/absolute/path` and `unix://relative/path`.
    public init(parsing endpoint: String) throws(EndpointError) {
        guard endpoint.hasPrefix("unix:") else {
            throw EndpointError("endpoint \(endpoint) is not supported: only unix:///path/to/socket endpoints are")
        }
        var path = String(endpoint.dropFirst("unix:".count))
        if path.hasPrefix("//") { path.removeFirst(2) }
        guard !path.isEmpty else { throw EndpointError("endpoint \(endpoint) names no socket path") }
        guard !path.utf8.contains(0) else { throw EndpointError("endpoint path contains a NUL byte") }
        guard path.utf8.count <= Self.maximumPathLength else {
            throw EndpointError("socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow at most \(Self.maximumPathLength)")
        }
        self.path = path
    }

    public var description: String { "unix://\(path)" }

    /// Makes the path ready for `bind`: a stale socket left by a dead process is removed; a live
    /// socket (another driver is serving) or any other kind of file is refused, never deleted.
    public func prepareForListening() throws(EndpointError) {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            let error = errno
            guard error == ENOENT else {
                throw EndpointError("cannot inspect \(path): \(String(cString: strerror(error)))")
            }
            try createParentDirectory()
            return
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw EndpointError("\(path) exists and is not a socket; refusing to replace it (remove it yourself if it is not needed)")
        }
        if Self.acceptsConnections(at: path) {
            throw EndpointError("\(path) is a live socket: another process is serving on it")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw EndpointError("cannot remove stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    private func createParentDirectory() throws(EndpointError) {
        let parent = (path as NSString).deletingLastPathComponent
        guard !parent.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o750])
        } catch {
            throw EndpointError("cannot create socket directory \(parent): \(error.localizedDescription)")
        }
    }

    /// True when some process accepts connections on the socket at `path`.
    static func acceptsConnections(at path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8.prefix(raw.count - 1))
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }
}

public struct EndpointError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
