import GRPCCore
import GRPCInProcessTransport
import PeerProto
import Peering

/// Every peer is the one in-process server: peering's logic over gRPC without sockets, TLS or
/// root, for tests whose subject is what the peers say, not how it travels.
struct InProcessConnector: PeerConnecting {
    let client: GRPCClient<InProcessTransport.Client>

    func withClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_Peer.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await body(Strata_Peer_V1_Peer.Client(wrapping: client))
    }

    func withRemoteVolumeClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_RemoteVolume.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await body(Strata_Peer_V1_RemoteVolume.Client(wrapping: client))
    }
}
