import Glibc

/// The driver's side of the keeper: one short connection per request, so a keeper restarted in
/// between is simply reached again.
public struct FuseKeeperClient: Sendable {
    public let socketPath: String
    /// How long a request may wait for the keeper's answer.
    public var timeoutSeconds = 5

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Gives the keeper a duplicate of `descriptor` for `entry`'s volume (replacing one it held).
    public func hold(_ entry: KeeperEntry, descriptor: Int32) throws {
        try exchange(["HOLD"] + entry.fields, passing: descriptor) { _ in }
    }

    /// Tells the keeper the volume's export is gone: it closes its descriptor.
    public func drop(volumeID: String) throws {
        try exchange(["DROP", KeeperEntry.hex(volumeID)]) { _ in }
    }

    /// Every entry the keeper holds, each with a descriptor of its own the caller must close.
    public func list() throws -> [(entry: KeeperEntry, descriptor: Int32)] {
        var entries: [(entry: KeeperEntry, descriptor: Int32)] = []
        do {
            try exchange(["LIST"]) { receive in
                while true {
                    guard let (words, descriptor) = try receive() else { throw KeeperSocket.Failure("the FUSE keeper hung up in the middle of a list") }
                    if words == ["END"] { return }
                    guard words.first == "ENTRY", let entry = KeeperEntry(wireFields: words.dropFirst()), let descriptor else {
                        if let descriptor { close(descriptor) }
                        throw KeeperSocket.Failure("the FUSE keeper sent a malformed entry")
                    }
                    entries.append((entry, descriptor))
                }
            }
        } catch {
            entries.forEach { close($0.descriptor) }
            throw error
        }
        return entries
    }

    private func exchange(_ words: [String], passing descriptor: Int32? = nil,
                          _ more: (() throws -> (words: [String], descriptor: Int32?)?) throws -> Void) throws {
        let fd = try KeeperSocket.connect(socketPath)
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try KeeperSocket.send(fd, words, passing: descriptor)
        if words.first == "LIST" {
            try more { try KeeperSocket.receive(fd) }
            return
        }
        guard let (answer, extra) = try KeeperSocket.receive(fd) else { throw KeeperSocket.Failure("the FUSE keeper hung up") }
        if let extra { close(extra) }
        guard answer.first == "OK" else {
            throw KeeperSocket.Failure("the FUSE keeper refused \(words.first ?? ""): \(answer.dropFirst().joined(separator: " "))")
        }
    }
}
