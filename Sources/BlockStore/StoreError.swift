#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one error type of the store: a code callers branch on, a message for people, and the cause.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        case notFound
        case alreadyExists
        case outOfRange
        case invalidArgument
        case chainDepthLimit
        case noSpace
        case corrupt
        case busy
        case io
        /// Two objects that must share a lineage do not (a delta between snapshots of unrelated chains).
        case unrelated
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying {
            return "\(code): \(message) (\(underlying))"
        }
        return "\(code): \(message)"
    }

    /// Maps a failed system call to a store error; a full disk is `.noSpace`, the rest `.io`.
    static func system(_ operation: String, errno code: Int32) -> StoreError {
        let text = String(cString: strerror(code))
        switch code {
        case ENOSPC, EDQUOT:
            return StoreError(.noSpace, "\(operation): \(text)")
        default:
            return StoreError(.io, "\(operation): \(text) (errno \(code))")
        }
    }

    static func notFound(_ what: String) -> StoreError { StoreError(.notFound, "\(what) not found") }
}
