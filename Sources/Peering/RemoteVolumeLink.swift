import Dispatch
import Foundation
import GRPCCore
import PeerProto
import Synchronization

/// A staged volume's link to its owner on another node: what the node's block device reads and
/// writes when the volume's writable head lives elsewhere. Calls come from FUSE worker threads,
/// which block until the owner answers; several workers' requests travel at once, at most
/// `maximumInFlight` of them, as messages of one long-lived stream on the one pooled connection
/// to the owner (`RemoteIOChannel`).
///
/// While the owner cannot be reached, I/O waits and is retried (every request is idempotent: a
/// write of the same bytes at the same offset, a read, a discard, a flush); it never fails
/// silently nor returns other data. `unreachableSince` tells the volume's condition meanwhile.
/// What the owner refuses (a node it no longer admits) fails the I/O at once; a stale epoch (the
/// owner froze the volume for a new owner) throws `VolumeFenced`, which the caller answers by
/// sending the request to the new owner.
public final class RemoteVolumeLink: Sendable {
    public let volumeID: String
    /// This node, as the owner records it.
    public let nodeID: String
    public let owner: PeerEndpoint
    public let epoch: UInt64
    private let sizeBytes: Atomic<UInt64>
    let connector: any PeerConnecting
    private let inFlight: DispatchSemaphore
    private let channel: RemoteIOChannel
    /// The block wire to the owner, when it serves one (`BlockWire`): the fast path.
    private let wire: BlockWireRoute
    /// Set when the owner answered UNIMPLEMENTED to the stream: its driver predates it.
    private let streamUnsupported = Atomic<Bool>(false)
    private let unreachable = Mutex<ContinuousClock.Instant?>(nil)

    public static let maximumInFlight = 64
    /// One request's deadline; past it the request is sent again.
    static let requestTimeout: Duration = .seconds(10)
    private static let requestOptions = PeerClientPool.options(timeout: requestTimeout)

    /// A link the owner already admitted (after a restart of this process: the owner's catalog
    /// still records this node as staging the volume).
    public init(volumeID: String, nodeID: String, owner: PeerEndpoint, epoch: UInt64, size: UInt64, connector: any PeerConnecting) {
        self.volumeID = volumeID
        self.nodeID = nodeID
        self.owner = owner
        self.epoch = epoch
        session = .with { $0.volumeID = volumeID; $0.nodeID = nodeID; $0.epoch = epoch }
        sizeBytes = Atomic(size)
        self.connector = connector
        inFlight = DispatchSemaphore(value: Self.maximumInFlight)
        channel = RemoteIOChannel(owner: owner, connector: connector)
        wire = BlockWireRoute(owner: owner, session: session, connector: connector)
    }

    /// Finds the node that owns `volumeID` among the peers and records this node as staging it
    /// there. NOT_FOUND when every peer answered that it does not hold it; UNAVAILABLE when one
    /// that might could not be asked; the owner's refusal (FAILED_PRECONDITION) as it gave it.
    public static func attach(volumeID: String, directory: PeerDirectory) async throws -> (RemoteVolumeLink, RemoteStaging) {
        let owner = try await locateOwner(of: volumeID, directory: directory)
        let answer = try await directory.connector.withRemoteVolumeClient(owner) { client in
            try await client.attach(
                .with { $0.volumeID = volumeID; $0.nodeID = directory.localNode }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
        }
        let staging = RemoteStaging(size: answer.sizeBytes, epoch: answer.epoch, ownerNode: answer.ownerNode, stagedOn: answer.stagedOn)
        var endpoint = owner
        endpoint.nodeID = answer.ownerNode
        let link = RemoteVolumeLink(
            volumeID: volumeID, nodeID: directory.localNode, owner: endpoint, epoch: answer.epoch, size: answer.sizeBytes,
            connector: directory.connector)
        return (link, staging)
    }

    /// The peer whose store holds `volumeID`'s writable head.
    public static func locateOwner(of volumeID: String, directory: PeerDirectory) async throws -> PeerEndpoint {
        var failures: [String] = []
        var everyPeerLacksIt = true
        let endpoints = await directory.endpoints()
        for endpoint in endpoints {
            do {
                let located = try await directory.connector.withClient(endpoint) { client in
                    try await client.locateVolume(.with { $0.volumeID = volumeID }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
                }
                var owner = endpoint
                owner.nodeID = located.ownerNode
                return owner
            } catch let error as RPCError where error.code == .notFound {
                failures.append("\(endpoint): not there")
            } catch {
                everyPeerLacksIt = false
                failures.append("\(endpoint): \(error)")
            }
        }
        let tried = failures.isEmpty ? "no peer is configured" : failures.joined(separator: "; ")
        if everyPeerLacksIt && !endpoints.isEmpty {
            throw PeeringError.notFound("volume \(volumeID) lives on no node (\(tried))")
        }
        throw PeeringError.unavailable("volume \(volumeID) is not on node \(directory.localNode) and its owner could not be reached: \(tried)")
    }

    public var size: UInt64 { sizeBytes.load(ordering: .relaxed) }

    /// The volume grew on its owner (an expansion): the export above reads the new size.
    public func resize(to size: UInt64) { sizeBytes.store(size, ordering: .relaxed) }

    /// Since when the owner has not answered, while it does not; nil when it does.
    public var unreachableSince: ContinuousClock.Instant? { unreachable.withLock { $0 } }

    /// Who asks, in every request; made once, not per I/O.
    let session: Strata_Peer_V1_VolumeSession

    // MARK: - Block I/O (blocking: called from FUSE worker threads)

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let answer = try perform(.read, offset: offset, length: UInt64(buffer.count))
        guard answer.count == buffer.count else {
            throw PeeringError.dataLoss("the owner of volume \(volumeID) answered \(answer.count) bytes for a read of \(buffer.count)")
        }
        answer.copy(into: buffer)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        _ = try perform(.write, offset: offset, length: UInt64(bytes.count), payload: bytes)
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        _ = try perform(.discard, offset: offset, length: length)
    }

    /// Returns once the owner has made every write answered before it durable.
    public func flush() throws {
        _ = try perform(.flush, offset: 0, length: 0)
    }

    /// Ends the connections to the owner (the export is closed); I/O after it fails.
    public func close() {
        channel.close()
        wire.close()
    }

    /// Tells the owner this node no longer stages the volume (after the last flush).
    public func detach() async throws {
        let request = Strata_Peer_V1_DetachRequest.with { $0.session = session }
        _ = try await connector.withRemoteVolumeClient(owner) { client in
            try await client.detach(request, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
        }
    }

    /// `detach()` for a caller on a blocking thread; the owner's refusal or absence is thrown
    /// (UNAVAILABLE while it cannot be reached: the caller retries later).
    public func detachWaiting() throws {
        try WaitingThread.run { [self] in try await detach() }.get()
    }

    /// Sends one request and waits for its reply on this (non-cooperative) thread, sending it
    /// again while the owner cannot be reached. Over the block wire when the owner serves it;
    /// over the Exchange stream, or the unary calls, when the owner's driver predates them (a
    /// rolling upgrade: old and new drivers side by side).
    private func perform(
        _ kind: BlockWire.Kind, offset: UInt64, length: UInt64, payload: UnsafeRawBufferPointer? = nil
    ) throws -> BlockAnswer {
        inFlight.wait()
        defer { inFlight.signal() }
        var delay: Duration = .milliseconds(50)
        while true {
            let outcome: Result<BlockAnswer, RPCError>
            var route = RemoteIORoute.stream
            switch wire.route() {
            case .success(let wireChannel?):
                route = .wire
                outcome = Result { () throws(RPCError) in
                    BlockAnswer.buffer(try wireChannel.call(kind, offset: offset, length: length, payload: payload, timeout: Self.requestTimeout))
                }
                if case .failure(let error) = outcome, error.cause is BlockWireConnectionFailure {
                    wire.forget(wireChannel)
                }
            case .success(nil):
                let request = Self.request(kind, offset: offset, length: length, payload: payload, session: session)
                route = streamUnsupported.load(ordering: .relaxed) ? .unary : .stream
                outcome = (route == .stream ? streamed(request) : unary(request)).map { .data($0.data) }
            case .failure(let error):
                outcome = .failure(error)
            }
            switch outcome {
            case .success(let answer):
                unreachable.withLock { $0 = nil }
                return answer
            case .failure(let error) where error.code == .unimplemented && route == .stream:
                streamUnsupported.store(true, ordering: .relaxed)
            case .failure(let error) where error.code == .aborted:
                unreachable.withLock { $0 = nil }
                throw VolumeFenced(volumeID: volumeID, epoch: epoch, message: error.message)
            case .failure(let error) where error.code == .unavailable || error.code == .deadlineExceeded:
                unreachable.withLock { since in if since == nil { since = .now } }
                Thread.sleep(forTimeInterval: Double(delay.components.attoseconds) / 1e18 + Double(delay.components.seconds))
                delay = min(delay * 2, .seconds(1))
            case .failure(let error):
                unreachable.withLock { $0 = nil }
                throw error
            }
        }
    }

    private static func request(
        _ kind: BlockWire.Kind, offset: UInt64, length: UInt64, payload: UnsafeRawBufferPointer?, session: Strata_Peer_V1_VolumeSession
    ) -> Strata_Peer_V1_BlockRequest {
        .with {
            $0.session = session
            $0.offset = offset
            switch kind {
            case .read: $0.operation = .read; $0.length = length
            case .write: $0.operation = .write; $0.data = payload.map { Data($0) } ?? Data()
            case .discard: $0.operation = .discard; $0.length = length
            case .flush: $0.operation = .flush
            case .open: $0.operation = .unspecified
            }
        }
    }

    /// The request on the stream; a refusal in the reply becomes the error the unary call throws.
    private func streamed(_ request: Strata_Peer_V1_BlockRequest) -> Result<Strata_Peer_V1_BlockReply, RPCError> {
        let reply: Strata_Peer_V1_BlockReply
        do { reply = try channel.call(request, timeout: Self.requestTimeout) } catch { return .failure(error) }
        guard reply.code != 0 else { return .success(reply) }
        let code = Status.Code(rawValue: Int(reply.code)).flatMap(RPCError.Code.init) ?? .unknown
        return .failure(RPCError(code: code, message: reply.message))
    }

    /// The request as its unary call, run on a Swift task while this thread waits.
    private func unary(_ request: Strata_Peer_V1_BlockRequest) -> Result<Strata_Peer_V1_BlockReply, RPCError> {
        WaitingThread.run { [connector, owner] in
            try await connector.withRemoteVolumeClient(owner) { client in try await Self.unaryCall(request, on: client) }
        }.mapError { $0 as? RPCError ?? RPCError(code: .unavailable, message: "\($0)") }
    }

    private static func unaryCall(
        _ request: Strata_Peer_V1_BlockRequest, on client: any Strata_Peer_V1_RemoteVolume.ClientProtocol
    ) async throws -> Strata_Peer_V1_BlockReply {
        let options = requestOptions
        switch request.operation {
        case .read:
            let answer = try await client.read(
                .with { $0.session = request.session; $0.offset = request.offset; $0.length = UInt32(request.length) }, options: options)
            return .with { $0.data = answer.data }
        case .write:
            _ = try await client.write(.with { $0.session = request.session; $0.offset = request.offset; $0.data = request.data }, options: options)
        case .discard:
            _ = try await client.discard(.with { $0.session = request.session; $0.offset = request.offset; $0.length = request.length }, options: options)
        case .flush:
            _ = try await client.flush(.with { $0.session = request.session }, options: options)
        case .unspecified, .UNRECOGNIZED:
            throw RPCError(code: .invalidArgument, message: "a block request without an operation")
        }
        return .init()
    }
}

/// The owner refused a request because the volume's epoch moved on: it was frozen for a new
/// owner (an ownership handover), so nothing at this epoch is served there any more.
public struct VolumeFenced: Error, CustomStringConvertible, Sendable {
    public let volumeID: String
    public let epoch: UInt64
    public let message: String

    public var description: String { "volume \(volumeID) at epoch \(epoch) is fenced: \(message)" }
}
