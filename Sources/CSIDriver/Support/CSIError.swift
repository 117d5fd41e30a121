import GRPCCore

/// A request the driver refuses, with the gRPC code the CSI spec assigns and a message that
/// tells the caller what to fix.
struct CSIError: Error, RPCErrorConvertible, CustomStringConvertible {
    let rpcErrorCode: RPCError.Code
    let rpcErrorMessage: String

    var description: String { "\(rpcErrorCode): \(rpcErrorMessage)" }

    static func invalidArgument(_ message: String) -> CSIError { CSIError(rpcErrorCode: .invalidArgument, rpcErrorMessage: message) }
    static func notFound(_ message: String) -> CSIError { CSIError(rpcErrorCode: .notFound, rpcErrorMessage: message) }
    static func alreadyExists(_ message: String) -> CSIError { CSIError(rpcErrorCode: .alreadyExists, rpcErrorMessage: message) }
    static func outOfRange(_ message: String) -> CSIError { CSIError(rpcErrorCode: .outOfRange, rpcErrorMessage: message) }
    static func aborted(_ message: String) -> CSIError { CSIError(rpcErrorCode: .aborted, rpcErrorMessage: message) }
    static func resourceExhausted(_ message: String) -> CSIError { CSIError(rpcErrorCode: .resourceExhausted, rpcErrorMessage: message) }
    static func failedPrecondition(_ message: String) -> CSIError { CSIError(rpcErrorCode: .failedPrecondition, rpcErrorMessage: message) }
    static func unavailable(_ message: String) -> CSIError { CSIError(rpcErrorCode: .unavailable, rpcErrorMessage: message) }
    static func internalError(_ message: String) -> CSIError { CSIError(rpcErrorCode: .internalError, rpcErrorMessage: message) }
}
