import GRPCCore
import GRPCNIOTransportHTTP2
import PeerProto
import Synchronization

/// Hands out peer clients. Behind a protocol so that tests can serve the peer protocol from
/// anything, and callers never see a transport.
public protocol PeerConnecting: Sendable {
    /// Runs `body` with a client of the peer at `endpoint`.
    func withClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_Peer.ClientProtocol) async throws -> Result
    ) async throws -> Result
    /// Runs `body` with a client of the peer's RemoteVolume service (same connection).
    func withRemoteVolumeClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_RemoteVolume.ClientProtocol) async throws -> Result
    ) async throws -> Result
    /// How to reach peers' block wire (`BlockWire`); nil: never, block I/O uses the Exchange stream.
    var blockWireDialer: BlockWireDialer? { get }
}

extension PeerConnecting {
    public var blockWireDialer: BlockWireDialer? { nil }
}

/// One long-lived mutual-TLS HTTP/2 client per peer address, shared by every call to that peer:
/// a layer transfer, a replica check and (soon) each forwarded block I/O reuse one connection
/// instead of paying a TCP and TLS handshake per call. A connection that breaks is re-established
/// by the transport (backoff from 100 ms to 1 s); meanwhile calls fail at once (no
/// wait-for-ready), so callers move on to the next holder.
public final class PeerClientPool: PeerConnecting {
    private let security: HTTP2ClientTransport.Posix.TransportSecurity
    /// The same certificates for the block wire; nil if NIOSSL cannot load them (the driver
    /// checked the files at start: block I/O then goes over the Exchange stream).
    public let blockWireDialer: BlockWireDialer?
    private let state = Mutex(State())

    private struct State {
        var clients: [PeerEndpoint.Address: PooledClient] = [:]
        /// Set by shutDown(): no client starts after it.
        var closed = false
    }

    private struct PooledClient: Sendable {
        let client: GRPCClient<HTTP2ClientTransport.Posix>
        let connections: Task<Void, Never>
    }

    public init(settings: PeerSettings) {
        security = settings.clientSecurity
        blockWireDialer = settings.blockWire ? (try? BlockWireDialer.tlsContext(settings)).map { BlockWireDialer(tls: $0) } : nil
    }

    /// Unary calls: a peer that does not answer within this is skipped.
    public static let unaryTimeout: Duration = .seconds(10)
    /// One layer's stream.
    public static let streamTimeout: Duration = .seconds(3600)

    public static func options(timeout: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        // A peer that is down fails the call at once, so the next holder is tried.
        options.waitForReady = false
        options.maxResponseMessageBytes = 8 << 20
        return options
    }

    public func withClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_Peer.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await withReconnect(endpoint) { try await body(Strata_Peer_V1_Peer.Client(wrapping: $0)) }
    }

    public func withRemoteVolumeClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (any Strata_Peer_V1_RemoteVolume.ClientProtocol) async throws -> Result
    ) async throws -> Result {
        try await withReconnect(endpoint) { try await body(Strata_Peer_V1_RemoteVolume.Client(wrapping: $0)) }
    }

    /// Runs `body` on the pooled client; when the peer is UNAVAILABLE, the client is dropped and
    /// `body` runs once more on a new one. A pooled connection that failed backs off before it
    /// tries again (up to a second), so a peer that has just come back would otherwise be
    /// refused by this node until then; every call of the peer protocol is idempotent (names
    /// and ids make retries find what the first attempt did), so running it again is safe.
    private func withReconnect<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await Self.withoutPeerMetadata {
            let pooled = try client(for: endpoint.address)
            do {
                return try await body(pooled)
            } catch let error as RPCError where error.code == .unavailable {
                evict(endpoint.address, ifStill: pooled)
                return try await body(try client(for: endpoint.address))
            }
        }
    }

    /// Drops `client` from the pool (if another call has not replaced it already) and closes it
    /// once its calls in flight end.
    private func evict(_ address: PeerEndpoint.Address, ifStill client: GRPCClient<HTTP2ClientTransport.Posix>) {
        let dropped = state.withLock { state -> PooledClient? in
            guard let pooled = state.clients[address], pooled.client === client else { return nil }
            return state.clients.removeValue(forKey: address)
        }
        dropped?.client.beginGracefulShutdown()
    }

    /// A peer's error keeps its code and message but not its metadata: the metadata is the
    /// peer's response trailers, and an error rethrown by one of this node's own servers would
    /// send them as its trailers, which resets the caller's stream ("Stream unexpectedly closed").
    private static func withoutPeerMetadata<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as RPCError {
            throw RPCError(code: error.code, message: error.message, cause: error.cause)
        }
    }

    /// The client of `address`, started on first use.
    private func client(for address: PeerEndpoint.Address) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        if let pooled = state.withLock({ $0.clients[address] }) { return pooled.client }
        let candidate = GRPCClient(transport: try Self.transport(to: address, security: security))
        return try state.withLock { state in
            if let pooled = state.clients[address] { return pooled.client }
            guard !state.closed else { throw PeeringError.unavailable("the peer connections are closed: the driver is stopping") }
            // Started under the lock, so that shutDown() sees every running client.
            let connections = Task { _ = try? await candidate.runConnections() }
            state.clients[address] = PooledClient(client: candidate, connections: connections)
            return candidate
        }
    }

    private static func transport(
        to address: PeerEndpoint.Address, security: HTTP2ClientTransport.Posix.TransportSecurity
    ) throws -> HTTP2ClientTransport.Posix {
        let target: any ResolvableTarget
        if IPAddressText.isIPv4(address.host) {
            target = .ipv4(address: address.host, port: address.port)
        } else if address.host.contains(":") {
            target = .ipv6(address: address.host, port: address.port)
        } else {
            target = .dns(host: address.host, port: address.port)
        }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        // Layer chunks are 1 MiB: a wide window keeps a fast link busy.
        config.http2.targetWindowSize = 16 << 20
        config.http2.maxFrameSize = 1 << 20
        config.backoff.initial = .milliseconds(100)
        config.backoff.max = .seconds(1)
        return try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: config)
    }

    /// Closes every connection (in-flight calls finish first); later calls fail UNAVAILABLE.
    public func shutDown() async {
        let all = state.withLock { state in
            state.closed = true
            defer { state.clients = [:] }
            return Array(state.clients.values)
        }
        for pooled in all { pooled.client.beginGracefulShutdown() }
        // A graceful shutdown waits for every open stream, and a staged volume's remote-I/O
        // stream ends only when its export closes: calls in flight get a moment to end, then
        // the connections close under whatever is left (its I/O is sent again after a restart).
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for pooled in all { await pooled.connections.value } }
            group.addTask {
                try? await Task.sleep(for: Self.shutdownGrace)
                guard !Task.isCancelled else { return }
                for pooled in all { pooled.connections.cancel() }
                for pooled in all { await pooled.connections.value }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// How long `shutDown()` waits for calls in flight before it closes the connections.
    static let shutdownGrace: Duration = .seconds(2)
}
