import BlockStore

/// What peering needs from the driver it runs in, and nothing more: which node this is, the
/// store once it is open, and a way to snapshot a volume the driver may be serving (under the
/// driver's own per-volume lock, with the volume at a clean point). The driver implements it;
/// peering knows nothing of CSI.
public protocol PeerHost: AnyObject, Sendable {
    var nodeID: String { get }
    /// The open store; throws (UNAVAILABLE on the wire) while it is still opening.
    func store() throws -> BlockStore
    /// Runs `body` while no other operation of the driver acts on `volumeID` and the volume's
    /// data is at a clean point (its writes flushed into the store).
    func withVolumeQuiesced<Value: Sendable>(_ volumeID: String, _ body: @escaping @Sendable () throws -> Value) async throws -> Value
}

/// The figures peering reports (the driver's metrics registry implements it).
public protocol PeerMetricsRecorder: Sendable {
    func recordPeerBytes(received: Int, sent: Int)
    /// A snapshot fetch from a peer ended, `result` ok or failed.
    func recordPeerFetch(result: String)
    /// Transfers running now change by `delta`, `direction` send or receive.
    func adjustPeerTransfers(_ direction: String, by delta: Double)
}

/// What a node staging a volume that lives elsewhere learns from the volume's owner.
public struct RemoteStaging: Sendable, Equatable {
    public var size: UInt64
    public var epoch: UInt64
    public var ownerNode: String
    /// Every node staging the volume now, the asker included.
    public var stagedOn: [String]

    public init(size: UInt64, epoch: UInt64, ownerNode: String, stagedOn: [String]) {
        self.size = size
        self.epoch = epoch
        self.ownerNode = ownerNode
        self.stagedOn = stagedOn
    }
}

/// The owner's side of remote staging: the driver decides who may stage a volume (its access
/// mode, how many nodes stage it already, this node's own staging) under its per-volume lock.
public protocol RemoteStagingHost: PeerHost {
    /// Records `node` as staging `volumeID`; throws FAILED_PRECONDITION (as an RPC error) for a
    /// single-node volume or one two nodes stage already, NOT_FOUND when it does not live here.
    func attachRemoteStager(_ node: String, toVolume volumeID: String) async throws -> RemoteStaging
    /// Forgets `node` as a stager of `volumeID` (idempotent).
    func detachRemoteStager(_ node: String, fromVolume volumeID: String) async throws
    /// A CSI controller call another node forwarded here (see `ForwardController`).
    func handleForwardedCall(method: String, request: [UInt8]) async throws -> [UInt8]
}

/// What the owner answers a node taking a volume over: the hidden snapshot to copy, and what
/// the volume is, for the new owner's catalog.
public struct HandOverOffer: Sendable {
    public var manifest: ReplicaManifest
    public var volumeName: String
    public var epoch: UInt64
    public var parameters: [String: String]

    public init(manifest: ReplicaManifest, volumeName: String, epoch: UInt64, parameters: [String: String]) {
        self.manifest = manifest
        self.volumeName = volumeName
        self.epoch = epoch
        self.parameters = parameters
    }
}

/// Both sides of an ownership handover (a multi-node volume moving to the node that stages it).
public protocol HandOverHost: RemoteStagingHost {
    /// The owner's side: a hidden snapshot for `node` to copy (the last one, after which this
    /// node takes no more writes, when `freeze`).
    func handOver(_ volumeID: String, to node: String, freeze: Bool) async throws -> HandOverOffer
    /// The owner's side: `node` holds the volume now; delete it here. `stagerForgotten` runs once
    /// `node` no longer counts as staging the volume (the remote I/O service closes its handle
    /// then, which the deletion needs).
    func releaseHandedOver(_ volumeID: String, to node: String, stagerForgotten: @escaping @Sendable () -> Void) async throws
    /// The staging node's side: `owner` no longer stages the volume; take it over (in the
    /// background: the hint's sender does not wait).
    func ownershipOffered(_ volumeID: String, by owner: String)
    /// The owner's side, at start and periodically: volumes frozen for a node that now owns them
    /// (its release was lost to a crash) are deleted here, and volumes let go but not yet taken
    /// over (the hint was lost) are offered again; `stagerForgotten` as for `releaseHandedOver`.
    func tidyHandedOver(stagerForgotten: @escaping @Sendable (String) -> Void) async
}
