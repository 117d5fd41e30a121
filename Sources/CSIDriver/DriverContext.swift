import BlockStore
import CSIProto
import CSIValidation
import Foundation
import Peering
import Synchronization

/// What the CSI services share: the configuration, the store once it is open, and the locks.
final class DriverContext: PeerHost {
    let configuration: DriverConfiguration
    let locks = OperationLocks()
    private let openStore = Mutex<BlockStore?>(nil)
    private let nodeStager = Mutex<VolumeStager?>(nil)
    private let peerRuntime = Mutex<PeerRuntime?>(nil)
    private let forwarded = Mutex<ForwardedControllerCalls?>(nil)
    private let driverMetrics = Mutex<DriverMetrics?>(nil)

    init(configuration: DriverConfiguration) {
        self.configuration = configuration
    }

    /// Where the block store keeps its catalog and layer files.
    var storeDirectory: String { (configuration.stateDirectory as NSString).appendingPathComponent("store") }

    func storeDidOpen(_ store: BlockStore) { openStore.withLock { $0 = store } }

    /// Takes the store away from the services (they answer UNAVAILABLE from now on) for closing.
    func storeWillClose() -> BlockStore? { openStore.withLock { store in defer { store = nil }; return store } }

    /// The store, or UNAVAILABLE while it is still opening (recovery after a crash can take a moment).
    func store() throws(CSIError) -> BlockStore {
        guard let store = openStore.withLock({ $0 }) else {
            throw .unavailable("the block store is still opening; retry shortly")
        }
        return store
    }

    /// Ready once the store is open and, on a node, staged volumes are restored: before that,
    /// a target path may still show the previous process's dead mount.
    var isReady: Bool {
        openStore.withLock { $0 != nil } && (!configuration.mode.servesNode || nodeStager.withLock { $0 != nil })
    }

    /// Set when this process also serves the Node service, so snapshots can quiesce staged volumes.
    func nodeDidStart(_ stager: VolumeStager) { nodeStager.withLock { $0 = stager } }

    var stager: VolumeStager? { nodeStager.withLock { $0 } }

    /// Set by the server: how controller calls other nodes forward here are answered.
    func controllerDidStart(_ calls: ForwardedControllerCalls) { forwarded.withLock { $0 = calls } }

    var forwardedCalls: ForwardedControllerCalls? { forwarded.withLock { $0 } }

    /// Set by the server: where events the services see (handovers) are counted.
    func metricsDidStart(_ metrics: DriverMetrics) { driverMetrics.withLock { $0 = metrics } }

    var metrics: DriverMetrics? { driverMetrics.withLock { $0 } }

    /// Runs a snapshot while the volumes staged here are at a clean point (see `VolumeStager.whileQuiesced`).
    func whileQuiesced<T>(_ volumeIDs: [String], _ body: () throws -> T) throws -> T {
        guard let stager = nodeStager.withLock({ $0 }) else { return try body() }
        return try stager.whileQuiesced(volumeIDs, body)
    }

    var nodeID: String { configuration.nodeID }

    /// A peer's clone of a volume served here: under the volume's lock, with its writes flushed.
    func withVolumeQuiesced<Value: Sendable>(_ volumeID: String, _ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await locks.withLocks([LockKey.volume(volumeID)]) {
            try await BlockingWork.run { [self] in try whileQuiesced([volumeID], body) }
        }
    }

    /// Set when peer flags were given: snapshots and volumes of other nodes can then be cloned here.
    func peersDidStart(_ runtime: PeerRuntime) { peerRuntime.withLock { $0 = runtime } }

    var peers: PeerRuntime? { peerRuntime.withLock { $0 } }

    /// Volumes live on the node whose driver created them.
    var topology: Csi_V1_Topology {
        .with { $0.segments = [DriverConfiguration.topologyKey: configuration.nodeID] }
    }

    /// Where a multi-node volume is reachable: from every node that reaches its peers (its owner
    /// serves the others), or, on a node without peer settings, from this node only.
    var multiNodeTopology: Csi_V1_Topology {
        guard configuration.peering != nil else { return topology }
        return .with { $0.segments = [DriverConfiguration.multiNodeTopologyKey: DriverConfiguration.multiNodeTopologyValue] }
    }

    /// What NodeGetInfo reports: this node's own segment, and the multi-node one when it has peers.
    var nodeTopology: Csi_V1_Topology {
        var segments = topology.segments
        if configuration.peering != nil {
            segments[DriverConfiguration.multiNodeTopologyKey] = DriverConfiguration.multiNodeTopologyValue
        }
        return .with { $0.segments = segments }
    }

    /// Whether a topology requirement admits this node; no requisite list admits any node.
    func admits(_ requirement: Csi_V1_TopologyRequirement) -> Bool {
        requirement.requisite.isEmpty
            || requirement.requisite.contains { $0.segments[DriverConfiguration.topologyKey] == configuration.nodeID }
    }
}
