import BlockStore
import Prometheus

/// Where ReadWriteMany volumes live and how their ownership moves, for an admin watching a
/// live migration or a drain: which volumes this node serves to others, which it reaches on
/// others, which are frozen here on their way out, and how long each takeover held the I/O of
/// the VM above it (the pause a guest sees at the switch).
extension DriverMetrics {
    /// From a switch that only swaps a backend (~1 ms) to one that waits on a slow peer.
    private static let pauseBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]

    /// The owner of a volume staged here agreed to hand it over, and this node copied the bulk
    /// of it (an attempt: one a restart or a fault cut short counts again when retried).
    func recordHandOverStarted() {
        registry.makeCounter(descriptor: Self.name("handovers_started", unit: "total",
                                                   help: "Takeovers of a ReadWriteMany volume this node began: its owner agreed and the bulk was copied (each attempt)."))
            .increment()
    }

    /// This node now owns a volume it took over; `ioPause` is how long the volume's I/O was held.
    func recordHandOverCompleted(ioPause: Duration) {
        registry.makeCounter(descriptor: Self.name("handovers_completed", unit: "total",
                                                   help: "Takeovers of a ReadWriteMany volume this node completed: it owns the volume now."))
            .increment()
        registry.makeDurationHistogram(
            descriptor: Self.name("handover_io_pause", unit: "seconds",
                                  help: "How long a takeover held the volume's I/O on this node (flush through the old owner, its freeze, the last copy, the switch)."),
            buckets: Self.pauseBuckets
        ).record(ioPause)
    }

    /// This node handed a volume over and deleted its copy.
    func recordHandOverReleased() {
        registry.makeCounter(descriptor: Self.name("handovers_released", unit: "total",
                                                   help: "ReadWriteMany volumes this node handed to their new owner and deleted here."))
            .increment()
    }

    func refreshPlacementGauges(_ census: StoreCensus) {
        let gauges: [(MetricNameDescriptor, Int)] = [
            (Self.name("multi_node_volumes", help: "ReadWriteMany volumes this node owns."), census.multiNodeVolumes),
            (Self.name("remote_served_volumes", help: "Volumes this node owns that another node stages now, served from here over the peer connection."),
             census.remotelyStagedVolumes),
            (Self.name("moving_volumes", help: "Volumes frozen here while another node takes them over."), census.movingVolumes),
        ]
        for (descriptor, value) in gauges { registry.makeGauge(descriptor: descriptor).set(to: Double(value)) }
    }

    /// Volumes staged on this node whose owner is another node (their I/O goes there).
    func refreshStagedFromOtherNodes(_ count: Int) {
        registry.makeGauge(descriptor: Self.name("remote_staged_volumes", help: "Volumes staged here whose owner is another node: their I/O goes there."))
            .set(to: Double(count))
    }
}
