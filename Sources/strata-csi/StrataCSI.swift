#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import CSIDriver
import Foundation
import Logging
import Peering

/// The driver process: parses flags, sets up logging and signals, and runs the CSI server.
@main
struct StrataCSI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata-csi",
        abstract: "Strata CSI driver: layered copy-on-write volumes with instant snapshots and clones.",
        version: DriverConfiguration.version
    )

    @Option(help: "Where to listen: unix:///path/to/csi.sock (default: <state-dir>/csi.sock).")
    var endpoint: String?

    @Option(help: "CSI driver name; must equal the StorageClass provisioner.")
    var drivername = DriverConfiguration.defaultDriverName

    @Option(help: "This node's id, reported by NodeGetInfo and used as the topology segment (default: the hostname).")
    var nodeid: String?

    @Option(help: "Directory holding the block store (catalog and layer files).")
    var stateDir = "./strata-data"

    @Option(help: "Which services to serve: controller, node or all.")
    var mode: DriverConfiguration.Mode = .all

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "kubelet's root directory; staging and target paths outside it are refused.")
    var kubeletDir = "/var/lib/kubelet"

    @Option(help: "Where the FUSE export of staged volumes is mounted (default: <state-dir>/exports).")
    var exportDir: String?

    @Option(help: "Seconds in-flight calls may run after SIGTERM/SIGINT before they are cancelled.")
    var gracePeriod: Int = 10

    @Option(help: "Capabilities to advertise: current, or csi-1.10 / csi-1.6 for conformance tools that reject newer ones (csi-sanity v5.3 / v4.4).")
    var capabilityProfile: DriverConfiguration.CapabilityProfile = .current

    @Option(help: "Offer ControllerExpandVolume (true or false). Set false when one elected external-resizer serves many nodes' volumes, as deploy/ does: NodeExpandVolume then grows each volume on its node.")
    var controllerExpansion = true

    @Option(help: "Chain depth past which a volume is flattened in the background (equal to the hard limit: never flatten, only refuse).")
    var chainDepthSoftLimit = 32

    @Option(help: "Chain depth no snapshot or clone may exceed (refused with RESOURCE_EXHAUSTED).")
    var chainDepthHardLimit = 128

    @Option(help: "MiB of disk the store keeps allocated so that deletions still work on a full disk (0: none).")
    var spaceReserveMib = 8

    @Option(help: "Serve Prometheus metrics over HTTP at GET /metrics on this address (host:port, :port for every interface); off when not given.")
    var metricsAddress: String?

    @Option(help: "Socket of strata-fuse-keeper, which holds the FUSE connection of staged volumes so that they survive a restart of this process (node mode). Without it a restart cuts running volumes.")
    var fuseKeeperSocket: String?

    @Option(help: "Serve the peer protocol (layer transfers to other nodes, mutual TLS) on this address (host:port, :port for every interface).")
    var peerListen: String?

    @Option(help: "Serve remote block I/O of ReadWriteMany volumes (the block wire: same TLS files, its own binary framing) on this port of the --peer-listen host; 'off' sends it over the peer protocol's gRPC stream instead. Default: the --peer-listen port + 1 (any free port when that is 0).")
    var peerWirePort: String?

    @Option(help: "A peer node and its peer address, NODE=HOST:PORT; repeat for each node (a static list, for bare metal and tests).")
    var peer: [String] = []

    @Option(help: "A DNS name whose every address is a peer, NAME:PORT (e.g. a headless Service over the DaemonSet); resolved each time holders are looked for. Repeatable.")
    var peerDns: [String] = []

    @Option(help: "Directory with ca.crt, tls.crt and tls.key (PEM) for the peer protocol; required with any other --peer flag.")
    var peerTlsDir: String?

    @Option(help: "Layer transfers this node serves to peers at once; more wait their turn.")
    var peerMaxSends = 3

    @Option(help: "Caps the bandwidth of each transfer this node serves to peers, in MiB/s (0: no cap).")
    var peerSendLimitMibps = 0

    @Option(help: "Seconds between checks of the replicas held here against their origin (deleted there: freed here).")
    var peerCheckInterval = 60

    @Option(help: "The admin socket the strata CLI talks to, created mode 0600 (default: $STRATA_ADMIN_ENDPOINT, else unix://<state-dir>/admin.sock; none: no admin socket).")
    var adminEndpoint: String?

    @Flag(help: .hidden)
    var disablePingResponder = false

    func validate() throws {
        guard gracePeriod >= 0 else { throw ValidationError("--grace-period must be zero or more seconds") }
        guard chainDepthSoftLimit >= 1, chainDepthHardLimit >= 2 else {
            throw ValidationError("--chain-depth-soft-limit must be at least 1 and --chain-depth-hard-limit at least 2")
        }
        guard chainDepthSoftLimit <= chainDepthHardLimit else {
            throw ValidationError("--chain-depth-soft-limit (\(chainDepthSoftLimit)) must not exceed --chain-depth-hard-limit (\(chainDepthHardLimit))")
        }
        guard (0...(1 << 20)).contains(spaceReserveMib) else { throw ValidationError("--space-reserve-mib must be 0 to 1048576") }
        do { try DriverConfiguration.validate(driverName: drivername) } catch { throw ValidationError(error.description) }
        if let fuseKeeperSocket, !fuseKeeperSocket.hasPrefix("/") {
            throw ValidationError("--fuse-keeper-socket must be an absolute path")
        }
        if let metricsAddress {
            do { _ = try DriverConfiguration.ListenAddress(parsing: metricsAddress) } catch {
                throw ValidationError("--metrics-address: \(error.description)")
            }
        }
        do { _ = try peerSettings() } catch { throw ValidationError(error.description) }
    }

    /// The peer flags together; nil when none is given.
    func peerSettings() throws(ConfigurationError) -> PeerSettings? {
        guard peerListen != nil || !peer.isEmpty || !peerDns.isEmpty || peerTlsDir != nil else { return nil }
        guard let peerTlsDir else {
            throw ConfigurationError("--peer-listen, --peer and --peer-dns need --peer-tls-dir: peers authenticate each other with the cluster CA")
        }
        guard (1...64).contains(peerMaxSends) else { throw ConfigurationError("--peer-max-sends must be 1 to 64") }
        guard peerCheckInterval >= 1 else { throw ConfigurationError("--peer-check-interval must be at least 1 second") }
        var settings = PeerSettings(tlsDirectory: URL(fileURLWithPath: peerTlsDir).standardizedFileURL.path)
        do {
            settings.listenAddress = try peerListen.map { text throws(ConfigurationError) in try DriverConfiguration.ListenAddress(parsing: text) }
        } catch { throw ConfigurationError("--peer-listen: \(error.description)") }
        for text in peer {
            do { settings.staticPeers.append(try PeerSettings.StaticPeer(parsing: text)) } catch {
                throw ConfigurationError("--peer: \(error.description)")
            }
        }
        for text in peerDns {
            let address: DriverConfiguration.ListenAddress
            do { address = try DriverConfiguration.ListenAddress(parsing: text) } catch {
                throw ConfigurationError("--peer-dns: \(error.description)")
            }
            guard address.host != "0.0.0.0" else { throw ConfigurationError("--peer-dns: \"\(text)\" names no host") }
            settings.dnsNames.append(address)
        }
        settings.maxConcurrentSends = peerMaxSends
        switch peerWirePort {
        case nil: break
        case "off": settings.blockWire = false
        case let text?:
            guard let port = Int(text), (0...65535).contains(port) else { throw ConfigurationError("--peer-wire-port must be a port (0 to 65535) or off, not \"\(text)\"") }
            settings.wirePort = port
        }
        guard peerSendLimitMibps >= 0 else { throw ConfigurationError("--peer-send-limit-mibps must be 0 or more") }
        settings.sendBytesPerSecond = peerSendLimitMibps > 0 ? peerSendLimitMibps << 20 : nil
        settings.replicaCheckInterval = .seconds(peerCheckInterval)
        return settings
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        setvbuf(stdout, nil, _IOLBF, 0)
        var logger = Logger(label: "strata")
        logger.logLevel = level

        let stateDirectory = URL(fileURLWithPath: stateDir).standardizedFileURL.path
        var configuration = DriverConfiguration(
            driverName: drivername,
            nodeID: nodeid ?? ProcessInfo.processInfo.hostName,
            stateDirectory: stateDirectory,
            mode: mode,
            kubeletDirectory: kubeletDir,
            exportDirectory: exportDir,
            gracePeriod: .seconds(gracePeriod),
            logger: logger
        )
        configuration.answersPingsBeforeHTTP2 = !disablePingResponder
        configuration.capabilityProfile = capabilityProfile
        configuration.controllerExpansion = controllerExpansion
        configuration.chainDepthSoftLimit = chainDepthSoftLimit
        configuration.chainDepthHardLimit = chainDepthHardLimit
        configuration.spaceReserveBytes = spaceReserveMib << 20
        configuration.fuseKeeperSocket = fuseKeeperSocket
        if fuseKeeperSocket == nil && mode != .controller {
            logger.warning("no --fuse-keeper-socket: a restart or upgrade of this process will cut every running volume on the node (pods must then be restarted)")
        }
        configuration.peering = try peerSettings()
        configuration.metricsAddress = try metricsAddress.map { text throws(ConfigurationError) in try DriverConfiguration.ListenAddress(parsing: text) }
        do {
            let admin = adminEndpoint ?? ProcessInfo.processInfo.environment["STRATA_ADMIN_ENDPOINT"] ?? "unix://\(stateDirectory)/admin.sock"
            configuration.adminEndpoint = admin == "none" ? nil : try UnixSocketEndpoint(parsing: admin)
            let endpoint = try UnixSocketEndpoint(parsing: endpoint ?? "unix://\(stateDirectory)/csi.sock")
            guard configuration.adminEndpoint?.path != endpoint.path else {
                throw ConfigurationError("--admin-endpoint must not be the CSI endpoint: the admin socket is root-only")
            }
            let server = try DriverServer(configuration: configuration)
            let shutdown = ShutdownTrigger()
            let signalSources = installShutdownSignalHandlers(logger: logger) { shutdown.fire() }
            defer { signalSources.forEach { $0.cancel() } }
            try await server.serve(on: endpoint, until: shutdown)
            logger.notice("strata-csi stopped")
        } catch let error as EndpointError {
            logger.critical("cannot listen: \(error.description)")
            throw ExitCode(2)
        } catch let error as ConfigurationError {
            logger.critical("invalid configuration: \(error.description)")
            throw ExitCode(2)
        }
    }
}

extension DriverConfiguration.Mode: ExpressibleByArgument {}
extension DriverConfiguration.CapabilityProfile: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}
