import GRPCCore

/// A request the driver refuses, with the gRPC code the CSI spec assigns and a message that
/// tells the caller what to fix.
package struct CSIError: Error, RPCErrorConvertible, CustomStringConvertible {
    /// The message travels in an HTTP/2 trailer, and clients (grpc-go, swift-nio-http2) drop the
    /// whole connection when headers exceed 16 KiB: a message echoing hostile input would cut
    /// every other call of a sidecar. Echoed values go through `RequestFields.quoted`; this cap
    /// is the backstop.
    package static let maximumMessageBytes = 1024

    package let rpcErrorCode: RPCError.Code
    package let rpcErrorMessage: String

    package init(rpcErrorCode: RPCError.Code, rpcErrorMessage: String) {
        self.rpcErrorCode = rpcErrorCode
        guard rpcErrorMessage.utf8.count > Self.maximumMessageBytes else {
            self.rpcErrorMessage = rpcErrorMessage
            return
        }
        var kept = String.UnicodeScalarView()
        var bytes = 0
        for scalar in rpcErrorMessage.unicodeScalars {
            bytes += UTF8.width(scalar)
            guard bytes <= Self.maximumMessageBytes - 32 else { break }
            kept.append(scalar)
        }
        self.rpcErrorMessage = String(kept) + "… (message truncated)"
    }

    package var description: String { "\(rpcErrorCode): \(rpcErrorMessage)" }

    package static func invalidArgument(_ message: String) -> CSIError { CSIError(rpcErrorCode: .invalidArgument, rpcErrorMessage: message) }
    package static func notFound(_ message: String) -> CSIError { CSIError(rpcErrorCode: .notFound, rpcErrorMessage: message) }
    package static func alreadyExists(_ message: String) -> CSIError { CSIError(rpcErrorCode: .alreadyExists, rpcErrorMessage: message) }
    package static func outOfRange(_ message: String) -> CSIError { CSIError(rpcErrorCode: .outOfRange, rpcErrorMessage: message) }
    package static func aborted(_ message: String) -> CSIError { CSIError(rpcErrorCode: .aborted, rpcErrorMessage: message) }
    package static func resourceExhausted(_ message: String) -> CSIError { CSIError(rpcErrorCode: .resourceExhausted, rpcErrorMessage: message) }
    package static func failedPrecondition(_ message: String) -> CSIError { CSIError(rpcErrorCode: .failedPrecondition, rpcErrorMessage: message) }
    package static func unavailable(_ message: String) -> CSIError { CSIError(rpcErrorCode: .unavailable, rpcErrorMessage: message) }
    package static func internalError(_ message: String) -> CSIError { CSIError(rpcErrorCode: .internalError, rpcErrorMessage: message) }
}
