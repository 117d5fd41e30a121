import BlockStore
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Everything peering needs while the driver runs: where peers are, the fetcher, the janitor of
/// replicas, and the server of the peer protocol when this node listens.
public final class PeerRuntime: Sendable {
    let settings: PeerSettings
    let pool: PeerClientPool
    public let directory: PeerDirectory
    public let fetcher: ReplicaFetcher
    public let janitor: ReplicaJanitor
    let sends: SendSlots
    /// Who may do block I/O on which volume here, and the handles it goes through.
    let sessions = RemoteSessions()
    /// Where this node serves the block wire, once it does (RemoteVolume.DescribeBlockWire).
    let wirePort = BlockWirePort()
    let metrics: any PeerMetricsRecorder
    let logger: Logger

    /// `connector` reaches the peers; nil: mutual TLS over TCP (`PeerClientPool`). Tests pass
    /// an in-process one, to drive node-to-node logic (a handover) without sockets or TLS.
    public init(
        settings: PeerSettings, nodeID: String, metrics: any PeerMetricsRecorder, logger: Logger,
        connector: (any PeerConnecting)? = nil, store: @escaping @Sendable () throws -> BlockStore
    ) {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        pool = PeerClientPool(settings: settings)
        directory = PeerDirectory(settings: settings, localNode: nodeID, connector: connector ?? pool)
        fetcher = ReplicaFetcher(directory: directory, metrics: metrics, logger: logger, store: store)
        janitor = ReplicaJanitor(directory: directory, logger: logger, store: store)
        sends = SendSlots(settings.maxConcurrentSends)
    }

    /// Pre-placement: asks every peer, in the background, to fetch a copy of a new snapshot now,
    /// so that even the first clone on each node is O(1). A peer that is down is skipped (it
    /// fetches on its first clone instead).
    public func placeEverywhere(_ snapshotID: String) {
        Task { [directory] in
            await withTaskGroup(of: Void.self) { group in
                for endpoint in await directory.endpoints() {
                    group.addTask {
                        _ = try? await directory.connector.withClient(endpoint) { client in
                            try await client.placeSnapshot(
                                .with { $0.snapshotID = snapshotID }, options: PeerClientPool.options(timeout: PeerClientPool.streamTimeout))
                        }
                    }
                }
            }
        }
    }

    /// Serves the peer protocol (when `--peer-listen` is set) and runs the periodic replica
    /// check, until cancelled; then closes the connections to peers.
    public func run(host: any HandOverHost) async throws {
        do {
            try await serve(host: host)
        } catch {
            await pool.shutDown()
            throw error
        }
        await pool.shutDown()
    }

    /// Stops serving other nodes' block I/O on this node's volumes (UNAVAILABLE from now on:
    /// they wait and ask the next process) once the requests running have finished. The driver
    /// calls it before it lets its volumes and its store go, so that a restart of an owner is
    /// a pause to the other node, never an error. Blocks; idempotent.
    public func stopServingVolumes() {
        sessions.stopServing()
    }

    /// The services of the peer protocol this node serves: layers and handovers, and block I/O
    /// on its volumes. Public so that tests can serve them over another transport.
    public func services(host: any HandOverHost) -> [any RegistrableRPCService] {
        [
            PeerService(
                host: host, sessions: sessions, metrics: metrics, sends: sends, fetcher: fetcher, janitor: janitor,
                sendBytesPerSecond: settings.sendBytesPerSecond),
            RemoteVolumeService(host: host, sessions: sessions, wirePort: wirePort),
        ]
    }

    private func serve(host: any HandOverHost) async throws {
        let sessions = self.sessions
        defer { sessions.closeAll() }
        // The block wire listens first, so that DescribeBlockWire never answers a port not yet served.
        let wire = try await startBlockWire(host: host)
        defer { wirePort.set(0) }
        do {
            try await serveGRPC(host: host)
        } catch {
            await wire?.close()
            throw error
        }
        await wire?.close()
    }

    private func startBlockWire(host: any HandOverHost) async throws -> BlockWireServer? {
        guard let address = settings.listenAddress, let port = settings.wireListenPort else { return nil }
        let server = try await BlockWireServer.start(
            host: address.host, port: port, tls: try BlockWireServer.tlsContext(settings),
            serving: BlockWireServing(host: host, sessions: sessions), logger: logger)
        wirePort.set(server.port)
        logger.notice("serving the block wire", metadata: ["address": "\(address.host):\(server.port)"])
        return server
    }

    private func serveGRPC(host: any HandOverHost) async throws {
        let sessions = self.sessions
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let address = settings.listenAddress {
                let transport = HTTP2ServerTransport.Posix(
                    address: address.host.contains(":") ? .ipv6(host: address.host, port: address.port) : .ipv4(host: address.host, port: address.port),
                    transportSecurity: settings.serverSecurity,
                    config: .defaults { $0.http2.targetWindowSize = 16 << 20; $0.http2.maxFrameSize = 1 << 20 })
                let server = GRPCServer(transport: transport, services: services(host: host))
                group.addTask {
                    try await withTaskCancellationHandler {
                        try await server.serve()
                    } onCancel: {
                        server.beginGracefulShutdown()
                    }
                }
                group.addTask { [logger] in
                    if let bound = try? await transport.listeningAddress {
                        logger.notice("serving the peer protocol", metadata: ["address": "\(bound)"])
                    }
                }
            }
            group.addTask { [janitor, settings] in
                let forget: @Sendable (String) -> Void = { volumeID in sessions.refresh(volumeID, host: host) }
                await host.tidyHandedOver(stagerForgotten: forget)
                while !Task.isCancelled {
                    try await Task.sleep(for: settings.replicaCheckInterval)
                    await janitor.checkAll()
                    await host.tidyHandedOver(stagerForgotten: forget)
                }
            }
            try await group.waitForAll()
        }
    }
}
