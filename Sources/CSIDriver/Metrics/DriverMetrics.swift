import BlockStore
import GRPCCore
import Prometheus

/// What the driver reports to Prometheus: every RPC (a count by method and gRPC code, a duration
/// histogram by method) and, read from the store at each scrape, what it holds and the room left.
public final class DriverMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// From a cheap clone (~1 ms) to a slow flatten or mkfs.
    private static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), configuration: DriverConfiguration) {
        self.registry = registry
        registry.makeGauge(
            descriptor: Self.name("build", unit: "info", help: "Always 1; the labels say which driver this is."),
            labels: [("version", DriverConfiguration.version), ("driver", configuration.driverName), ("mode", configuration.mode.rawValue)]
        ).set(to: 1)
    }

    /// One finished RPC; `method` is the CSI method name (CreateVolume), nil `code` is OK.
    func recordCall(method: String, code: RPCError.Code?, duration: Duration) {
        registry.makeCounter(descriptor: Self.name("rpc", unit: "total", help: "CSI calls answered, by method and gRPC code."),
                             labels: [("method", method), ("code", Self.codeName(code))]).increment()
        registry.makeDurationHistogram(descriptor: Self.name("rpc_duration", unit: "seconds", help: "Time to answer a CSI call, by method."),
                                       labels: [("method", method)], buckets: Self.durationBuckets).record(duration)
    }

    /// Reads the store's census and its filesystem's space into gauges; nil while the store is
    /// still opening (`strata_store_open` says which).
    func refresh(from store: BlockStore?) {
        let open = registry.makeGauge(descriptor: Self.name("store_open", help: "1 once the block store is open and serving, 0 while it opens."))
        guard let store, let census = try? store.census(), let space = try? store.filesystemSpace() else {
            open.set(to: 0)
            return
        }
        open.set(to: 1)
        let gauges: [(MetricNameDescriptor, Double)] = [
            (Self.name("volumes", help: "Volumes in the store."), Double(census.volumes)),
            (Self.name("snapshots", help: "Snapshots callers can see."), Double(census.snapshots)),
            (Self.name("hidden_snapshots", help: "Snapshots the store made for clones of volumes."), Double(census.hiddenSnapshots)),
            (Self.name("layers", help: "Layers, including those of deleted snapshots that clones still read."), Double(census.layers)),
            (Self.name("allocated", unit: "bytes", help: "Bytes allocated over every layer."), Double(census.allocatedBytes)),
            (Self.name("provisioned", unit: "bytes", help: "Sum of the sizes of all volumes."), Double(census.provisionedBytes)),
            (Self.name("deepest_chain", help: "The longest chain of layers under any volume."), Double(census.deepestChain)),
            (Self.name("pool_capacity", unit: "bytes", help: "Size of the filesystem holding the store."), Double(space.totalBytes)),
            (Self.name("pool_free", unit: "bytes", help: "Room left on the filesystem holding the store."), Double(space.freeBytes)),
        ]
        for (descriptor, value) in gauges { registry.makeGauge(descriptor: descriptor).set(to: value) }
        refreshPeerGauges(census)
        refreshPlacementGauges(census)
    }

    static func name(_ name: String, unit: String = "", help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "strata", metricName: name, unitName: unit, helpText: help)
    }

    /// The Prometheus text exposition of everything above.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// The gRPC code as grpc-go's interceptors spell it (OK, NotFound…); nil is OK.
    static func codeName(_ code: RPCError.Code?) -> String {
        guard let code else { return "OK" }
        switch code {
        case .cancelled: return "Canceled"
        case .unknown: return "Unknown"
        case .invalidArgument: return "InvalidArgument"
        case .deadlineExceeded: return "DeadlineExceeded"
        case .notFound: return "NotFound"
        case .alreadyExists: return "AlreadyExists"
        case .permissionDenied: return "PermissionDenied"
        case .resourceExhausted: return "ResourceExhausted"
        case .failedPrecondition: return "FailedPrecondition"
        case .aborted: return "Aborted"
        case .outOfRange: return "OutOfRange"
        case .unimplemented: return "Unimplemented"
        case .internalError: return "Internal"
        case .unavailable: return "Unavailable"
        case .dataLoss: return "DataLoss"
        case .unauthenticated: return "Unauthenticated"
        default: return "\(code)"
        }
    }
}
