import GRPCCore
import GRPCInProcessTransport
import PeerProto
import Peering

/// Peers served in process: peering's logic over gRPC without sockets, TLS or root, for tests
/// whose subject is what the peers say, not how it travels. One server for every peer, or one
/// per peer address.
struct InProcessConnector: PeerConnecting {
    private let clients: [String: GRPCClient<InProcessTransport.Client>]
    private let everyPeer: GRPCClient<InProcessTransport.Client>?
    /// The block wire is reached over real TCP and TLS when set (the owner listens on loopback).
    var blockWireDialer: BlockWireDialer?

    /// Every peer is the one server behind `client`.
    init(client: GRPCClient<InProcessTransport.Client>) {
        clients = [:]
        everyPeer = client
    }

    /// The peer at each host is the server behind its client; other hosts are UNAVAILABLE.
    init(clientsByHost: [String: GRPCClient<InProcessTransport.Client>]) {
        clients = clientsByHost
        everyPeer = nil
    }

    private func client(for endpoint: PeerEndpoint) throws -> GRPCClient<InProcessTransport.Client> {
        guard let client = clients[endpoint.host] ?? everyPeer else {
            throw RPCError(code: .unavailable, message: "no in-process peer at \(endpoint)")
        }
        return client
    }

    func withClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_Peer.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await body(Strata_Peer_V1_Peer.Client(wrapping: try client(for: endpoint)))
    }

    func withRemoteVolumeClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_RemoteVolume.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await body(Strata_Peer_V1_RemoteVolume.Client(wrapping: try client(for: endpoint)))
    }
}

/// Peer metrics nobody reads, for peering parts run alone in tests.
struct NoPeerMetrics: PeerMetricsRecorder {
    func recordPeerBytes(received: Int, sent: Int) {}
    func recordPeerFetch(result: String) {}
    func adjustPeerTransfers(_ direction: String, by delta: Double) {}
}
