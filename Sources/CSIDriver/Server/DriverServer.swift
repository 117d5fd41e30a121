#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import BlockStore
import CSIValidation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NodeHost
import NIOPosix
import Peering

/// Serves the CSI services of one driver process on a Unix socket until told to stop.
public final class DriverServer: Sendable {
    public let configuration: DriverConfiguration
    let context: DriverContext
    /// Present when this process serves the Node service.
    let stager: VolumeStager?
    public let metrics: DriverMetrics

    public init(configuration: DriverConfiguration) throws(ConfigurationError) {
        try DriverConfiguration.validate(driverName: configuration.driverName)
        guard !configuration.nodeID.isEmpty else { throw ConfigurationError("node id must not be empty") }
        self.configuration = configuration
        let context = DriverContext(configuration: configuration)
        self.context = context
        metrics = DriverMetrics(configuration: configuration)
        context.metricsDidStart(metrics)
        if let settings = configuration.peering {
            try settings.validate()
            context.peersDidStart(PeerRuntime(
                settings: settings, nodeID: configuration.nodeID, metrics: metrics, logger: configuration.logger,
                store: { [weak context] in
                    guard let context else { throw CSIError.unavailable("the driver is stopping") }
                    return try context.store()
                }))
        }
        if configuration.mode.servesController {
            // Answers the controller calls other nodes forward about volumes that live here.
            context.controllerDidStart(ForwardedControllerCalls(service: ControllerService(context: context, forwardsToOwner: false)))
        }
        if configuration.mode.servesNode {
            let logger = configuration.logger
            do {
                stager = VolumeStager(
                    context: context,
                    exporter: FuseExporter(mountPoint: configuration.exportDirectory, logger: logger),
                    attacher: LoopAttacher(logger: logger),
                    mounter: LinuxMounter(confinedTo: configuration.kubeletDirectory, logger: logger),
                    backends: DriverBackends(context: context),
                    registry: try StagingRegistry(
                        directory: (configuration.stateDirectory as NSString).appendingPathComponent("node"), fileName: "staged-volumes.json"))
            } catch {
                throw ConfigurationError("cannot read the node's staging registry under \(configuration.stateDirectory): \(error)")
            }
        } else {
            stager = nil
        }
    }

    /// Listens on `endpoint` and serves until `shutdown` fires; then stops accepting calls, lets
    /// in-flight ones finish within the grace period, cancels the rest and removes the socket.
    public func serve(on endpoint: UnixSocketEndpoint, until shutdown: ShutdownTrigger) async throws {
        let metricsEndpoint = try await startMetricsEndpoint()
        let peering = context.peers.map { [context, logger = configuration.logger] runtime in
            Task {
                do {
                    try await runtime.run(host: context)
                } catch where !(error is CancellationError) {
                    logger.critical("the peer protocol stopped", metadata: ["error": "\(error)"])
                }
            }
        }
        do {
            try await serveCalls(on: endpoint, until: shutdown)
        } catch {
            peering?.cancel()
            await metricsEndpoint?.stop()
            throw error
        }
        peering?.cancel()
        _ = await peering?.result
        await metricsEndpoint?.stop()
    }

    private func startMetricsEndpoint() async throws(ConfigurationError) -> MetricsEndpoint? {
        guard let address = configuration.metricsAddress else { return nil }
        let endpoint: MetricsEndpoint
        do {
            endpoint = try await MetricsEndpoint.start(host: address.host, port: address.port) { [metrics, context] in
                metrics.refresh(from: try? context.store())
                metrics.refreshStagedFromOtherNodes(context.stager?.registry.all.filter { $0.remoteOwner != nil }.count ?? 0)
                return metrics.exposition()
            }
        } catch {
            throw ConfigurationError("cannot serve metrics on \(address): \(error)")
        }
        let bound = DriverConfiguration.ListenAddress(host: address.host, port: endpoint.port)
        configuration.logger.notice("serving metrics", metadata: ["address": "\(bound)", "path": "/metrics"])
        return endpoint
    }

    private func serveCalls(on endpoint: UnixSocketEndpoint, until shutdown: ShutdownTrigger) async throws {
        let logger = configuration.logger
        try endpoint.prepareForListening()
        let listener = UnixSocketListenerFactory(
            endpoint: endpoint, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            answersPings: configuration.answersPingsBeforeHTTP2)
        let transport = HTTP2ServerTransport.Custom(listenerFactory: listener)
        let server = GRPCServer(
            transport: transport,
            services: makeServices(),
            interceptors: [RequestLogger(logger: logger, metrics: metrics)]
        )
        let admin = try makeAdminServer()
        defer {
            if listener.ownership.ownsSocketFile { unlink(endpoint.path) }
            if let admin, admin.listener.ownership.ownsSocketFile { unlink(admin.listener.endpoint.path) }
            // Other nodes' I/O on volumes owned here pauses first (it waits for the next process),
            // then staged volumes, which cannot outlive the process serving them, stop their
            // export cleanly, and the store (and its lock) is released for whoever opens it next.
            context.peers?.stopServingVolumes()
            stager?.shutDown()
            context.storeWillClose()?.close()
        }

        try await withThrowingTaskGroup(of: ServeEvent.self) { group in
            group.addTask {
                try await server.serve()
                return .stopped
            }
            if let admin {
                group.addTask {
                    try await admin.server.serve()
                    return .announced
                }
            }
            group.addTask { [configuration, context] in
                guard await transport.listeningAddress != nil else { return .announced }
                // Listening first lets kubelet see a live (not yet ready) plugin during recovery.
                let directory = context.storeDirectory
                let store: BlockStore
                do {
                    store = try await BlockingWork.run {
                        // The state directory holds volume data: nobody else may read it.
                        try FileManager.default.createDirectory(
                            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                        return try BlockStore(directory: directory, options: StoreOptions(
                            softChainDepthLimit: configuration.chainDepthSoftLimit,
                            hardChainDepthLimit: configuration.chainDepthHardLimit,
                            spaceReserveBytes: configuration.spaceReserveBytes,
                            logger: logger))
                    }
                } catch {
                    logger.critical("cannot open the block store", metadata: ["directory": "\(directory)", "error": "\(error)"])
                    throw error
                }
                context.storeDidOpen(store)
                if let stager = self.stager {
                    try await BlockingWork.run { try stager.startServing() }
                    context.nodeDidStart(stager)
                    // A handover cut short by a restart goes on (volumes whose owner let go).
                    stager.resumeHandOvers()
                }
                logger.notice("strata-csi listening", metadata: [
                    "endpoint": "\(endpoint)", "driver": "\(configuration.driverName)",
                    "mode": "\(configuration.mode.rawValue)", "node": "\(configuration.nodeID)",
                    "version": "\(DriverConfiguration.version)",
                ])
                return .announced
            }
            group.addTask { [gracePeriod = configuration.gracePeriod] in
                guard await shutdown.wait() else { return .gracePeriodOver }
                logger.notice("shutting down: draining in-flight calls", metadata: ["grace_period": "\(gracePeriod)"])
                server.beginGracefulShutdown()
                admin?.server.beginGracefulShutdown()
                try? await Task.sleep(for: gracePeriod)
                if !Task.isCancelled {
                    logger.warning("grace period over: cancelling calls still running")
                }
                return .gracePeriodOver
            }
            while let event = try await group.next() {
                switch event {
                case .announced: continue
                case .stopped, .gracePeriodOver: group.cancelAll()
                }
                if event == .stopped { return }
            }
        }
    }

    private enum ServeEvent { case announced, stopped, gracePeriodOver }

    /// The admin service on its own root-only socket (see `AdminService`), when configured.
    private func makeAdminServer() throws -> (server: GRPCServer<HTTP2ServerTransport.Custom<UnixSocketListenerFactory>>,
                                              listener: UnixSocketListenerFactory)? {
        guard let endpoint = configuration.adminEndpoint else { return nil }
        try endpoint.prepareForListening()
        var listener = UnixSocketListenerFactory(endpoint: endpoint, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        listener.permissions = UnixSocketListenerFactory.ownerOnlyPermissions
        let server = GRPCServer(
            transport: HTTP2ServerTransport.Custom(listenerFactory: listener),
            services: [AdminService(context: context)],
            interceptors: [RequestLogger(logger: configuration.logger, metrics: metrics)])
        return (server, listener)
    }

    private func makeServices() -> [any RegistrableRPCService] {
        // SnapshotMetadata reads the store, which every mode opens.
        var services: [any RegistrableRPCService] = [IdentityService(context: context), SnapshotMetadataService(context: context)]
        if configuration.mode.servesController {
            services.append(ControllerService(context: context))
            services.append(GroupControllerService(context: context))
        }
        if let stager {
            services.append(NodeService(context: context, stager: stager, paths: PathRules(root: configuration.kubeletDirectory)))
        }
        return services
    }
}
