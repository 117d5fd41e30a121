import Foundation
import Logging
import Peering

/// What an operator chooses when starting the driver; the executable fills it from flags.
public struct DriverConfiguration: Sendable {
    /// Which CSI services this process serves.
    public enum Mode: String, CaseIterable, Sendable {
        case controller, node, all

        var servesController: Bool { self != .node }
        var servesNode: Bool { self != .controller }
    }

    /// Which capabilities the driver advertises. An older CSI version's profile hides the
    /// capabilities added after it from conformance tools that reject any capability they do not
    /// know: `csi1_10` hides GET_SNAPSHOT (csi-sanity v5.3), `csi1_6` also
    /// GROUP_CONTROLLER_SERVICE (csi-sanity v4.4). The RPCs themselves keep working.
    public enum CapabilityProfile: String, CaseIterable, Sendable {
        case current
        case csi1_10 = "csi-1.10"
        case csi1_6 = "csi-1.6"

        var advertisesGetSnapshot: Bool { self == .current }
        var advertisesGroupController: Bool { self != .csi1_6 }
        /// SNAPSHOT_METADATA_SERVICE is newer than what csi-sanity v5.3 accepts.
        var advertisesSnapshotMetadata: Bool { self == .current }
    }

    public static let defaultDriverName = "strata.csi.dev"
    /// Reported as `vendor_version`; bump with each release.
    public static let version = "0.1.0"

    public var driverName: String
    public var nodeID: String
    public var stateDirectory: String
    public var mode: Mode
    /// The node plugin refuses staging and target paths outside this directory.
    public var kubeletDirectory: String
    /// Where the FUSE export of staged volumes is mounted.
    public var exportDirectory: String
    /// How long in-flight RPCs may run after SIGTERM before they are cancelled.
    public var gracePeriod: Duration
    public var capabilityProfile: CapabilityProfile = .current
    /// Whether to offer ControllerExpandVolume. Off where one elected external-resizer serves
    /// volumes of many nodes (deploy/): it could not reach them, so NodeExpandVolume grows each
    /// volume on the node that holds it.
    public var controllerExpansion = true
    /// Past this chain depth a volume is flattened in the background, so reads of clones of
    /// clones do not keep paying for ever deeper chains.
    public var chainDepthSoftLimit = 32
    /// A snapshot or clone that would make a chain deeper than this is refused (RESOURCE_EXHAUSTED).
    public var chainDepthHardLimit = 128
    /// Disk space the store keeps allocated so that deleting volumes still works on a full disk.
    public var spaceReserveBytes = 8 << 20
    /// Where to serve Prometheus metrics over plain HTTP (`GET /metrics`); nil: nowhere.
    public var metricsAddress: ListenAddress?
    /// The FUSE keeper's socket (strata-fuse-keeper --socket): with it, staged volumes survive a
    /// restart of this process; without it, a restart cuts them.
    public var fuseKeeperSocket: String?
    /// How to reach other nodes' drivers and serve them (`--peer-*`); nil: this node alone.
    public var peering: PeerSettings?
    /// The admin service's socket (mode 0600) for the `strata` CLI; nil: none.
    public var adminEndpoint: UnixSocketEndpoint?
    /// Off only to demonstrate, in tests, the disconnects `PingResponder` prevents.
    public var answersPingsBeforeHTTP2 = true
    public var logger: Logger

    public init(
        driverName: String = DriverConfiguration.defaultDriverName,
        nodeID: String,
        stateDirectory: String,
        mode: Mode = .all,
        kubeletDirectory: String = "/var/lib/kubelet",
        exportDirectory: String? = nil,
        gracePeriod: Duration = .seconds(10),
        logger: Logger = Logger(label: "strata")
    ) {
        self.driverName = driverName
        self.nodeID = nodeID
        self.stateDirectory = stateDirectory
        self.mode = mode
        self.kubeletDirectory = kubeletDirectory
        self.exportDirectory = exportDirectory ?? (stateDirectory as NSString).appendingPathComponent("exports")
        self.gracePeriod = gracePeriod
        self.logger = logger
    }

    /// A TCP address to listen on (metrics, the peer protocol).
    public typealias ListenAddress = NetworkAddress

    /// The topology segment key: volumes live on the node that created them.
    public static let topologyKey = "topology.strata.csi.dev/node"
    /// The segment every node that reaches its peers reports beside its own: a multi-node
    /// volume's topology, so its PersistentVolume's node affinity admits every such node (the VM
    /// using it may run, and migrate, anywhere), while still naming nodes, which distributed
    /// snapshotting needs to hand the volume's snapshots to one node's csi-snapshotter.
    public static let multiNodeTopologyKey = "topology.strata.csi.dev/multi-node"
    public static let multiNodeTopologyValue = "true"

    /// A CSI driver name: at most 63 characters, DNS-like, starting and ending alphanumeric.
    public static func validate(driverName: String) throws(ConfigurationError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        guard (1...63).contains(driverName.count), driverName.allSatisfy(allowed.contains),
              let first = driverName.first, let last = driverName.last,
              first.isLetter || first.isNumber, last.isLetter || last.isNumber
        else {
            throw ConfigurationError("driver name \"\(driverName)\" is invalid: use at most 63 letters, digits, '-' and '.', starting and ending with a letter or digit")
        }
    }
}
