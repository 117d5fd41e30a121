import Glibc

/// An error from the node side: what went wrong (`code`), in words (`message`), and the
/// system error behind it when there is one, so the CSI layer can map it to a status code.
public struct NodeHostError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The kind of failure, stable enough to map onto gRPC codes.
    public enum Code: String, Sendable {
        /// A name, path or option the caller gave is malformed.
        case invalidArgument
        /// The named export, device or path does not exist.
        case notFound
        /// Something else already holds the name, target or device.
        case alreadyExists
        /// The resource is in use (mounted, open) and cannot be released now.
        case busy
        /// The device carries data (a filesystem or partition table) and will not be formatted.
        case notBlank
        /// The kernel or the tools here cannot do what was asked.
        case unsupported
        /// No loop device, no space, or another exhausted resource.
        case resourceExhausted
        /// A system call failed; see `errno`.
        case systemCall
        /// An external tool (mkfs, blkid, resize2fs…) exited with failure; stderr is in the message.
        case commandFailed
        /// The exporter is stopped or not started.
        case notRunning
    }

    public var code: Code
    public var message: String
    /// The errno of the failed system call, when one failed.
    public var errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String {
        if let errno {
            return "\(code.rawValue): \(message): \(String(cString: strerror(errno))) (errno \(errno))"
        }
        return "\(code.rawValue): \(message)"
    }
}
