import Glibc

/// The keeper's wire: a Unix SOCK_SEQPACKET socket (one request or answer per packet, so no
/// framing), text messages of space-separated words, at most one descriptor per message passed
/// with SCM_RIGHTS. Requests: `HOLD <entry>` with a descriptor, `DROP <volume>`, `LIST`; the
/// keeper answers `OK`, `ERR <reason>`, and to LIST one `ENTRY <entry>` (with its descriptor)
/// per held volume, then `END`.
public enum KeeperSocket {
    public static let maximumMessage = 8192

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
        static func system(_ what: String) -> Failure { Failure("\(what): \(String(cString: strerror(errno)))") }
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw Failure("socket path \(path) is empty or too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func socket() throws -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure.system("socket") }
        return fd
    }

    /// Connects to the keeper at `path`.
    public static func connect(_ path: String) throws -> Int32 {
        let fd = try socket()
        var address = try address(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let failure = Failure.system("connect to the FUSE keeper at \(path)")
            close(fd)
            throw failure
        }
        return fd
    }

    /// Listens at `path`, mode 0600 from the start (bound under a umask of 077).
    public static func listen(_ path: String) throws -> Int32 {
        let fd = try socket()
        var address = try address(path)
        let previous = umask(0o077)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previous)
        guard bound == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 16) == 0 else {
            let failure = Failure.system("listen at \(path)")
            close(fd)
            throw failure
        }
        return fd
    }

    /// The user id of the process at the other end (SO_PEERCRED).
    public static func peerUserID(_ fd: Int32) -> uid_t? {
        // struct ucred (pid, uid, gid), which glibc declares only under _GNU_SOURCE.
        var credentials: (pid_t, uid_t, gid_t) = (0, 0, 0)
        var length = socklen_t(MemoryLayout<(pid_t, uid_t, gid_t)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0,
              length == socklen_t(MemoryLayout<(pid_t, uid_t, gid_t)>.size) else { return nil }
        return credentials.1
    }

    /// Sends one message, with `descriptor` attached when given.
    public static func send(_ fd: Int32, _ words: [String], passing descriptor: Int32? = nil) throws {
        var bytes = Array(words.joined(separator: " ").utf8)
        guard bytes.count <= maximumMessage else { throw Failure("message too long") }
        let controlLength = descriptor == nil ? 0 : cmsgSpace(MemoryLayout<Int32>.size)
        var control = [UInt8](repeating: 0, count: max(controlLength, 1))
        let sent = bytes.withUnsafeMutableBytes { payload -> Int in
            control.withUnsafeMutableBytes { controlBuffer -> Int in
                var vector = iovec(iov_base: payload.baseAddress, iov_len: payload.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> Int in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    if let descriptor {
                        message.msg_control = controlBuffer.baseAddress
                        message.msg_controllen = controlLength
                        let header = controlBuffer.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                        header.pointee.cmsg_level = SOL_SOCKET
                        header.pointee.cmsg_type = Int32(SCM_RIGHTS)
                        header.pointee.cmsg_len = cmsgLength(MemoryLayout<Int32>.size)
                        (controlBuffer.baseAddress! + cmsgHeaderSize).storeBytes(of: descriptor, as: Int32.self)
                    }
                    return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                }
            }
        }
        guard sent == bytes.count else { throw Failure.system("send to the FUSE keeper") }
    }

    /// Receives one message and the descriptor it carried (the caller owns it). Nil at end of stream.
    public static func receive(_ fd: Int32) throws -> (words: [String], descriptor: Int32?)? {
        var payload = [UInt8](repeating: 0, count: maximumMessage)
        let controlLength = cmsgSpace(MemoryLayout<Int32>.size * 4)
        var control = [UInt8](repeating: 0, count: controlLength)
        var received: [Int32] = []
        let count = payload.withUnsafeMutableBytes { payloadBuffer -> Int in
            control.withUnsafeMutableBytes { controlBuffer -> Int in
                var vector = iovec(iov_base: payloadBuffer.baseAddress, iov_len: payloadBuffer.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> Int in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBuffer.baseAddress
                    message.msg_controllen = controlLength
                    var result: Int
                    repeat { result = recvmsg(fd, &message, Int32(MSG_CMSG_CLOEXEC)) } while result < 0 && errno == EINTR
                    guard result >= 0 else { return result }
                    // Every descriptor that arrived, so that none leaks even in a malformed message.
                    var offset = 0
                    while offset + cmsgHeaderSize <= Int(message.msg_controllen) {
                        let header = (controlBuffer.baseAddress! + offset).assumingMemoryBound(to: cmsghdr.self)
                        let length = Int(header.pointee.cmsg_len)
                        guard length >= cmsgHeaderSize else { break }
                        if header.pointee.cmsg_level == SOL_SOCKET && header.pointee.cmsg_type == Int32(SCM_RIGHTS) {
                            let descriptors = (length - cmsgHeaderSize) / MemoryLayout<Int32>.size
                            for index in 0..<descriptors {
                                received.append((controlBuffer.baseAddress! + offset + cmsgHeaderSize + index * 4).loadUnaligned(as: Int32.self))
                            }
                        }
                        offset += cmsgAlign(length)
                    }
                    return result
                }
            }
        }
        guard count >= 0 else { throw Failure.system("receive from the FUSE keeper socket") }
        if count == 0 && received.isEmpty { return nil }
        if received.count > 1 {
            received.dropFirst().forEach { close($0) }
        }
        let text = String(decoding: payload[0..<count], as: UTF8.self)
        return (text.split(separator: " ").map(String.init), received.first)
    }

    private static let cmsgHeaderSize = cmsgAlign(MemoryLayout<cmsghdr>.size)
    private static func cmsgAlign(_ length: Int) -> Int { (length + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1) }
    private static func cmsgSpace(_ length: Int) -> Int { cmsgHeaderSize + cmsgAlign(length) }
    private static func cmsgLength(_ length: Int) -> Int { cmsgHeaderSize + length }
}
