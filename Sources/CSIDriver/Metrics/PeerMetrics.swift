import BlockStore
import Peering
import Prometheus

/// The peer protocol's figures: bytes each way, transfers running, copies held.
extension DriverMetrics: PeerMetricsRecorder {
    public func recordPeerBytes(received: Int = 0, sent: Int = 0) {
        if received > 0 {
            registry.makeCounter(descriptor: Self.peerName("peer_bytes_received", unit: "total",
                                                           help: "Layer bytes received from other nodes."))
                .increment(by: Int64(received))
        }
        if sent > 0 {
            registry.makeCounter(descriptor: Self.peerName("peer_bytes_sent", unit: "total", help: "Layer bytes sent to other nodes."))
                .increment(by: Int64(sent))
        }
    }

    /// A snapshot fetch from a peer started here (one per snapshot however many clones wait for it).
    public func recordPeerFetch(result: String) {
        registry.makeCounter(descriptor: Self.peerName("peer_fetches", unit: "total",
                                                       help: "Snapshot fetches from other nodes, by result (ok, failed)."),
                             labels: [("result", result)]).increment()
    }

    /// Adjusts the transfers in progress, `direction` send or receive.
    public func adjustPeerTransfers(_ direction: String, by delta: Double) {
        registry.makeGauge(descriptor: Self.peerName("peer_transfers_in_progress",
                                                     help: "Layer transfers running now, by direction (send, receive)."),
                           labels: [("direction", direction)]).increment(by: delta)
    }

    func refreshPeerGauges(_ census: StoreCensus) {
        registry.makeGauge(descriptor: Self.peerName("peer_copied_layers", help: "Layers held here as copies of other nodes' layers."))
            .set(to: Double(census.importedLayers))
        registry.makeGauge(descriptor: Self.peerName("peer_copied", unit: "bytes", help: "Bytes held by layers copied from other nodes."))
            .set(to: Double(census.importedBytes))
        registry.makeGauge(descriptor: Self.peerName("peer_replica_snapshots", help: "Snapshots of other nodes held here as copies."))
            .set(to: Double(census.replicaSnapshots))
    }

    private static func peerName(_ name: String, unit: String = "", help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "strata", metricName: name, unitName: unit, helpText: help)
    }
}
