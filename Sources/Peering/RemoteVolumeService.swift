import BlockStore
import Foundation
import GRPCCore
import PeerProto
import Synchronization

/// The owner's side of RemoteVolume: block I/O on a multi-node volume whose writable head lives
/// here, for the other node that stages it. Every request names its volume, the asking node and
/// the ownership epoch; it is served only if the catalog records that node as staging the volume
/// at that epoch, so a node that was never admitted, or let go, or acts on an older owner's
/// epoch reads and writes nothing.
struct RemoteVolumeService: Strata_Peer_V1_RemoteVolume.SimpleServiceProtocol {
    let host: any RemoteStagingHost
    let sessions: RemoteSessions
    /// Where this node serves the block wire, once it listens.
    var wirePort = BlockWirePort()

    /// Largest read or write in one request (the FUSE export sends at most 1 MiB).
    static let maximumTransfer = 4 << 20

    func attach(request: Strata_Peer_V1_AttachRequest, context _: ServerContext) async throws -> Strata_Peer_V1_AttachResponse {
        try PeerRequestRules.requireID(request.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(request.nodeID)
        let staging = try await host.attachRemoteStager(request.nodeID, toVolume: request.volumeID)
        sessions.refresh(request.volumeID, host: host)
        return .with {
            $0.sizeBytes = staging.size
            $0.epoch = staging.epoch
            $0.ownerNode = staging.ownerNode
            $0.stagedOn = staging.stagedOn
        }
    }

    func detach(request: Strata_Peer_V1_DetachRequest, context _: ServerContext) async throws -> Strata_Peer_V1_DetachResponse {
        try PeerRequestRules.requireID(request.session.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(request.session.nodeID)
        try await host.detachRemoteStager(request.session.nodeID, fromVolume: request.session.volumeID)
        sessions.refresh(request.session.volumeID, host: host)
        return .init()
    }

    func read(request: Strata_Peer_V1_ReadRequest, context _: ServerContext) async throws -> Strata_Peer_V1_ReadResponse {
        let data = try await BlockingWork.run { try readBlock(request.session, at: request.offset, length: UInt64(request.length)) }
        return .with { $0.data = data }
    }

    func write(request: Strata_Peer_V1_WriteRequest, context _: ServerContext) async throws -> Strata_Peer_V1_WriteResponse {
        try await BlockingWork.run { try writeBlock(request.session, request.data, at: request.offset) }
        return .init()
    }

    func discard(request: Strata_Peer_V1_DiscardRequest, context _: ServerContext) async throws -> Strata_Peer_V1_DiscardResponse {
        try await BlockingWork.run { try discardBlock(request.session, at: request.offset, length: request.length) }
        return .init()
    }

    func flush(request: Strata_Peer_V1_FlushRequest, context _: ServerContext) async throws -> Strata_Peer_V1_FlushResponse {
        try await BlockingWork.run { try flushBlocks(request.session) }
        return .init()
    }

    func describeBlockWire(
        request _: Strata_Peer_V1_DescribeBlockWireRequest, context _: ServerContext
    ) async throws -> Strata_Peer_V1_DescribeBlockWireResponse {
        .with { $0.port = UInt32(wirePort.port) }
    }

    // MARK: - The block operations (blocking), shared by the unary calls and the Exchange stream

    func readBlock(_ session: Strata_Peer_V1_VolumeSession, at offset: UInt64, length: UInt64) throws -> Data {
        guard length <= UInt64(Self.maximumTransfer) else { throw RPCError(code: .invalidArgument, message: "length is above \(Self.maximumTransfer)") }
        return try sessions.withHandle(for: session, host: host) { handle in
            try Self.requireRange(offset, length, within: handle)
            var data = Data(count: Int(length))
            try data.withUnsafeMutableBytes { try handle.read(into: $0, at: offset) }
            return data
        }
    }

    func writeBlock(_ session: Strata_Peer_V1_VolumeSession, _ data: Data, at offset: UInt64) throws {
        guard data.count <= Self.maximumTransfer else { throw RPCError(code: .invalidArgument, message: "data is above \(Self.maximumTransfer) bytes") }
        try sessions.withHandle(for: session, host: host) { handle in
            try Self.requireRange(offset, UInt64(data.count), within: handle)
            try data.withUnsafeBytes { try handle.write($0, at: offset) }
        }
    }

    func discardBlock(_ session: Strata_Peer_V1_VolumeSession, at offset: UInt64, length: UInt64) throws {
        try sessions.withHandle(for: session, host: host) { handle in
            try Self.requireRange(offset, length, within: handle)
            try handle.discard(at: offset, length: length)
        }
    }

    func flushBlocks(_ session: Strata_Peer_V1_VolumeSession) throws {
        try sessions.withHandle(for: session, host: host) { try $0.flush() }
    }

    private static func requireRange(_ offset: UInt64, _ length: UInt64, within handle: VolumeHandle) throws {
        let size = handle.size
        guard offset <= size, length <= size - offset else {
            throw RPCError(code: .outOfRange, message: "\(length) bytes at \(offset) pass the end of the volume (\(size) bytes)")
        }
    }
}

/// The port the block wire listens on (0 until it does, and when it does not).
final class BlockWirePort: Sendable {
    private let value = Atomic<Int>(0)
    var port: Int { value.load(ordering: .relaxed) }
    func set(_ port: Int) { value.store(port, ordering: .relaxed) }
}

/// Who may do I/O on which volume here, read from the catalog once and kept until an Attach or
/// Detach changes it; with the open handle the I/O goes through (one per volume, kept while any
/// node stages it remotely, shared with the node's own export: handles of a volume share one
/// engine). A change of stagers rereads the catalog but keeps the handle, so I/O of the other
/// stager in flight meanwhile never meets a closed handle.
final class RemoteSessions: Sendable {
    private struct Admitted: Sendable {
        let epoch: UInt64
        let nodes: Set<String>
    }

    private struct State {
        var admitted: [String: Admitted] = [:]
        var handles: [String: VolumeHandle] = [:]
        /// Block requests running on a handle right now.
        var running = 0
        /// The driver is stopping: block requests are answered UNAVAILABLE, and no handle opens.
        var stopping = false
    }

    private let state = Mutex(State())

    /// Runs `body` with the handle to serve `session` with, or throws why not: PERMISSION_DENIED
    /// for a node the catalog does not record as staging the volume, ABORTED for a stale epoch
    /// (the volume was frozen for another owner: the asker retries with that owner, never here),
    /// UNAVAILABLE once the driver stops (the asker waits and asks the next process).
    func withHandle<Value>(
        for session: Strata_Peer_V1_VolumeSession, host: any RemoteStagingHost, _ body: (VolumeHandle) throws -> Value
    ) throws -> Value {
        try PeerRequestRules.requireID(session.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(session.nodeID)
        let volumeID = session.volumeID
        let handle = try state.withLock { state -> VolumeHandle in
            guard !state.stopping else { throw Self.stoppingError(host) }
            let entry = try state.admitted[volumeID] ?? Self.reload(volumeID, into: &state, host: host)
            return try Self.admit(session, entry, into: &state)
        }
        defer { state.withLock { $0.running -= 1 } }
        return try body(handle)
    }

    /// `withHandle`, without touching the catalog: nil when the volume's stagers are not loaded
    /// yet (the caller, an event loop that must not block, hands the request to a thread).
    func withLoadedHandle<Value>(
        for session: Strata_Peer_V1_VolumeSession, _ body: (VolumeHandle) throws -> Value
    ) throws -> Value? {
        let volumeID = session.volumeID
        let loaded = try state.withLock { state -> VolumeHandle? in
            guard !state.stopping, let entry = state.admitted[volumeID] else { return nil }
            return try Self.admit(session, entry, into: &state)
        }
        guard let handle = loaded else { return nil }
        defer { state.withLock { $0.running -= 1 } }
        return try body(handle)
    }

    /// The handle `session` may use, counted as running; or why not: PERMISSION_DENIED for a node
    /// `entry` does not record as staging the volume, ABORTED for a stale epoch.
    private static func admit(_ session: Strata_Peer_V1_VolumeSession, _ entry: Admitted, into state: inout State) throws -> VolumeHandle {
        let volumeID = session.volumeID
        guard entry.nodes.contains(session.nodeID), let handle = state.handles[volumeID] else {
            throw RPCError(code: .permissionDenied, message: "node \(session.nodeID) does not stage volume \(volumeID) here")
        }
        guard session.epoch == entry.epoch else {
            throw RPCError(code: .aborted, message: "epoch \(session.epoch) of volume \(volumeID) is stale; it is at \(entry.epoch)")
        }
        state.running += 1
        return handle
    }

    /// Reads `volumeID`'s stagers again (an Attach or Detach changed them), opening its handle
    /// for the first one and closing it when none is left (so that the volume can be deleted).
    func refresh(_ volumeID: String, host: any RemoteStagingHost) {
        state.withLock { state in
            guard !state.stopping else { return }
            if (try? Self.reload(volumeID, into: &state, host: host)) == nil {
                state.admitted[volumeID] = nil
                try? state.handles.removeValue(forKey: volumeID)?.close()
            }
        }
    }

    private static func reload(_ volumeID: String, into state: inout State, host: any RemoteStagingHost) throws -> Admitted {
        let store = try host.store()
        let loaded = try load(volumeID, from: store, nodeID: host.nodeID)
        state.admitted[volumeID] = loaded
        if loaded.nodes.isEmpty {
            try? state.handles.removeValue(forKey: volumeID)?.close()
        } else if state.handles[volumeID] == nil {
            state.handles[volumeID] = try store.open(volumeID: volumeID)
        }
        return loaded
    }

    /// Stops serving block I/O before the driver lets its volumes go (an upgrade or a restart):
    /// requests from now on are answered UNAVAILABLE, which the stagers wait out and send again
    /// to the next process, and the ones running finish on open handles (up to `timeout`). Then
    /// every handle closes. Without this, requests met handles the shutdown had just closed, and
    /// the other node's device failed a write with EIO on a mere restart of the owner.
    func stopServing(timeout: Duration = .seconds(10)) {
        state.withLock { $0.stopping = true }
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ $0.running }) > 0, ContinuousClock.now < deadline { usleep(1_000) }
        closeAll()
    }

    private static func stoppingError(_ host: any RemoteStagingHost) -> RPCError {
        RPCError(code: .unavailable, message: "node \(host.nodeID) is stopping; ask again when it is back")
    }

    /// Closes every handle (the driver is stopping).
    func closeAll() {
        let handles = state.withLock { state in
            defer {
                state.handles = [:]
                state.admitted = [:]
            }
            return Array(state.handles.values)
        }
        for handle in handles { try? handle.close() }
    }

    private static func load(_ volumeID: String, from store: BlockStore, nodeID: String) throws -> Admitted {
        let volume: Volume
        do { volume = try store.volume(id: volumeID) } catch let error as StoreError where error.code == .notFound {
            throw RPCError(code: .notFound, message: "volume \(volumeID) does not live on node \(nodeID)")
        }
        guard volume.multiNode else { return Admitted(epoch: volume.epoch, nodes: []) }
        return Admitted(epoch: volume.epoch, nodes: Set(try store.remoteStagers(ofVolume: volumeID)))
    }
}
