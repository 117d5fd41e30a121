#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOPosix

/// Serves the CSI services of one driver process on a Unix socket until told to stop.
public final class DriverServer: Sendable {
    public let configuration: DriverConfiguration
    private let readiness = Readiness()

    public init(configuration: DriverConfiguration) throws(ConfigurationError) {
        try DriverConfiguration.validate(driverName: configuration.driverName)
        guard !configuration.nodeID.isEmpty else { throw ConfigurationError("node id must not be empty") }
        self.configuration = configuration
    }

    /// Listens on `endpoint` and serves until `shutdown` fires; then stops accepting calls, lets
    /// in-flight ones finish within the grace period, cancels the rest and removes the socket.
    public func serve(on endpoint: UnixSocketEndpoint, until shutdown: ShutdownTrigger) async throws {
        let logger = configuration.logger
        try endpoint.prepareForListening()
        let listener = UnixSocketListenerFactory(
            endpoint: endpoint, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            answersPings: configuration.answersPingsBeforeHTTP2)
        let transport = HTTP2ServerTransport.Custom(listenerFactory: listener)
        let server = GRPCServer(
            transport: transport,
            services: makeServices(),
            interceptors: [RequestLogger(logger: logger)]
        )
        defer {
            if listener.ownership.ownsSocketFile { unlink(endpoint.path) }
        }

        try await withThrowingTaskGroup(of: ServeEvent.self) { group in
            group.addTask {
                try await server.serve()
                return .stopped
            }
            group.addTask { [configuration] in
                guard await transport.listeningAddress != nil else { return .announced }
                self.readiness.markReady()
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

    private func makeServices() -> [any RegistrableRPCService] {
        [IdentityService(driverName: configuration.driverName, mode: configuration.mode, readiness: readiness)]
    }
}
