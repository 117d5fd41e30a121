import GRPCCore

/// A peering failure with the gRPC code it carries on any wire (the peer protocol's, or the CSI
/// services' when a CreateVolume had to fetch from a peer): NOT_FOUND when every peer answered
/// that it holds nothing of the kind, UNAVAILABLE when none that might could be reached, DATA_LOSS
/// when a peer's bytes failed their checks.
public struct PeeringError: Error, RPCErrorConvertible, CustomStringConvertible, Sendable {
    public let rpcErrorCode: RPCError.Code
    public let rpcErrorMessage: String

    public init(_ code: RPCError.Code, _ message: String) {
        rpcErrorCode = code
        rpcErrorMessage = message
    }

    public var description: String { "\(rpcErrorCode): \(rpcErrorMessage)" }

    static func notFound(_ message: String) -> PeeringError { PeeringError(.notFound, message) }
    static func unavailable(_ message: String) -> PeeringError { PeeringError(.unavailable, message) }
    static func dataLoss(_ message: String) -> PeeringError { PeeringError(.dataLoss, message) }
}
