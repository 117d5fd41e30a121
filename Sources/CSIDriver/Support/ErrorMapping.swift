import BlockStore
import GRPCCore
import NodeHost

/// The one place where store conditions become gRPC status codes (CSI spec, "Error Scheme").
/// Handlers catch the few conditions whose meaning depends on the call (a missing volume is
/// success for DeleteVolume, a malformed cursor is ABORTED for List*), everything else maps here.
extension StoreError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code {
        switch code {
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .outOfRange: .outOfRange
        case .invalidArgument: .invalidArgument
        // A chain at its depth limit is flattened in the background; the caller retries later.
        case .chainDepthLimit, .noSpace: .resourceExhausted
        case .busy, .unrelated: .failedPrecondition
        case .corrupt: .dataLoss
        case .io: .internalError
        }
    }

    public var rpcErrorMessage: String { message }
    public var rpcErrorCause: (any Error)? { underlying }
}


/// Node-side conditions as gRPC codes.
extension NodeHostError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code {
        switch code {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        // In use, holding data we will not format, or beyond what this host allows: the caller
        // must change something first.
        case .busy, .notBlank, .unsupported: .failedPrecondition
        case .resourceExhausted: .resourceExhausted
        case .systemCall, .commandFailed: .internalError
        case .notRunning: .unavailable
        }
    }

    public var rpcErrorMessage: String { description }
    public var rpcErrorCause: (any Error)? { nil }
}
