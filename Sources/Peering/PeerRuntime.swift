import BlockStore
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Everything peering needs while the driver runs: where peers are, the fetcher, the janitor of
/// replicas, and the server of the peer protocol when this node listens.
final class PeerRuntime: Sendable {
    let settings: PeerSettings
    let directory: PeerDirectory
    let fetcher: ReplicaFetcher
    let janitor: ReplicaJanitor
    let sends: SendSlots

    init(settings: PeerSettings, nodeID: String, metrics: DriverMetrics, logger: Logger, store: @escaping @Sendable () throws -> BlockStore) {
        self.settings = settings
        directory = PeerDirectory(settings: settings, localNode: nodeID)
        fetcher = ReplicaFetcher(directory: directory, metrics: metrics, logger: logger, store: store)
        janitor = ReplicaJanitor(directory: directory, logger: logger, store: store)
        sends = SendSlots(settings.maxConcurrentSends)
    }

    /// Pre-placement: asks every peer, in the background, to fetch a copy of a new snapshot now,
    /// so that even the first clone on each node is O(1). A peer that is down is skipped (it
    /// fetches on its first clone instead).
    func placeEverywhere(_ snapshotID: String) {
        Task { [directory] in
            await withTaskGroup(of: Void.self) { group in
                for endpoint in await directory.endpoints() {
                    group.addTask {
                        _ = try? await directory.connector.withClient(endpoint) { client in
                            try await client.placeSnapshot(
                                .with { $0.snapshotID = snapshotID }, options: PeerConnector.options(timeout: PeerConnector.streamTimeout))
                        }
                    }
                }
            }
        }
    }

    /// Serves the peer protocol (when `--peer-listen` is set) and runs the periodic replica
    /// check, until cancelled.
    func run(context: DriverContext, metrics: DriverMetrics, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let address = settings.listenAddress {
                let transport = HTTP2ServerTransport.Posix(
                    address: address.host.contains(":") ? .ipv6(host: address.host, port: address.port) : .ipv4(host: address.host, port: address.port),
                    transportSecurity: settings.serverSecurity,
                    config: .defaults { $0.http2.targetWindowSize = 16 << 20; $0.http2.maxFrameSize = 1 << 20 })
                let server = GRPCServer(
                    transport: transport,
                    services: [PeerService(
                        context: context, metrics: metrics, sends: sends, janitor: janitor, sendBytesPerSecond: settings.sendBytesPerSecond)])
                group.addTask {
                    try await withTaskCancellationHandler {
                        try await server.serve()
                    } onCancel: {
                        server.beginGracefulShutdown()
                    }
                }
                group.addTask {
                    if let bound = try? await transport.listeningAddress {
                        logger.notice("serving the peer protocol", metadata: ["address": "\(bound)"])
                    }
                }
            }
            group.addTask { [janitor, settings] in
                while !Task.isCancelled {
                    try await Task.sleep(for: settings.replicaCheckInterval)
                    await janitor.checkAll()
                }
            }
            try await group.waitForAll()
        }
    }
}
