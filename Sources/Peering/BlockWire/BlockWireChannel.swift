import Dispatch
import GRPCCore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PeerProto
import Synchronization

/// How a node reaches its peers' block wire: the TLS it presents and the event loops its
/// connections run on.
public struct BlockWireDialer: Sendable {
    let tls: NIOSSLContext
    let group: any EventLoopGroup

    init(tls: NIOSSLContext, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.tls = tls
        self.group = group
    }

    static func tlsContext(_ settings: PeerSettings) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(settings.certificatePath).map { .certificate($0) }
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: settings.keyPath, format: .pem))
        configuration.trustRoots = .file(settings.caPath)
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv13
        configuration.applicationProtocols = [BlockWire.applicationProtocol]
        return try NIOSSLContext(configuration: configuration)
    }
}

/// The cause of an UNAVAILABLE that came from the connection (it could not be made, it ended,
/// it was dropped), not from the owner's reply: only then is it worth asking the owner again
/// where its wire is. An owner that is stopping answers UNAVAILABLE on a working connection,
/// and asking it then would open new calls on a server that is shutting down.
struct BlockWireConnectionFailure: Error {}

/// One block-wire connection to a volume's owner, shared by every FUSE worker thread serving the
/// volume: a worker writes its request and blocks until the event loop hands it the reply, while
/// the others' requests travel beside it. Per request: one hop onto the event loop, one back to
/// the worker; no Swift task, no async sequence.
///
/// The connection is made on first use and again after it ends. When it ends (the owner went
/// away, or a request waited past its deadline and the connection was dropped), every request
/// still waiting on it fails UNAVAILABLE, and its caller sends it again: block requests are
/// idempotent.
final class BlockWireChannel: Sendable {
    let owner: PeerEndpoint
    let port: Int
    private let session: Strata_Peer_V1_VolumeSession
    private let dialer: BlockWireDialer

    /// Where a waiting worker finds its reply. Written once, before `done` is signalled, and read
    /// only after the worker's wait on `done` returned: the semaphore orders the two.
    final class Waiter: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var outcome: Result<ByteBuffer?, RPCError>?

        func finish(_ outcome: Result<ByteBuffer?, RPCError>) {
            self.outcome = outcome
            done.signal()
        }
    }

    private struct Connection {
        let generation: UInt64
        let channel: any Channel
        let outbox: BlockWireOutbox
    }

    private struct State {
        var nextID: UInt64 = 1
        var generations: UInt64 = 0
        /// The newest generation whose connection ended: one made before it is not used.
        var endedGeneration: UInt64 = 0
        var connection: Connection?
        var waiting: [UInt64: (generation: UInt64, waiter: Waiter)] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    /// Held while a connection is being made, so that the workers arriving meanwhile wait for it
    /// instead of each making one.
    private let connecting = Mutex(())
    static let connectTimeout: TimeAmount = .seconds(3)

    init(owner: PeerEndpoint, port: Int, session: Strata_Peer_V1_VolumeSession, dialer: BlockWireDialer) {
        self.owner = owner
        self.port = port
        self.session = session
        self.dialer = dialer
    }

    /// Sends one request (`payload`: the bytes of a write) and waits on this thread for its reply:
    /// what a read read, nil for the others. Throws the owner's refusal with its code,
    /// UNAVAILABLE when the connection could not be made or ended first, DEADLINE_EXCEEDED when
    /// no reply came within `timeout` (the connection is then dropped: an owner that stops
    /// answering is treated as gone).
    func call(
        _ kind: BlockWire.Kind, offset: UInt64, length: UInt64, payload: UnsafeRawBufferPointer? = nil, timeout: Duration
    ) throws(RPCError) -> ByteBuffer? {
        let connection = try currentConnection()
        let waiter = Waiter()
        let id = try state.withLock { state throws(RPCError) -> UInt64 in
            guard state.connection?.generation == connection.generation else {
                throw RPCError(code: .unavailable, message: "the block wire to \(owner) ended", cause: BlockWireConnectionFailure())
            }
            let id = state.nextID
            state.nextID &+= 1
            state.waiting[id] = (connection.generation, waiter)
            return id
        }
        let payloadLength = payload?.count ?? 0
        var frame = connection.channel.allocator.buffer(capacity: BlockWire.requestHeaderSize + payloadLength)
        BlockWire.writeRequestHeader(kind, id: id, offset: offset, length: length, payloadLength: payloadLength, to: &frame)
        if let payload { frame.writeBytes(payload) }
        connection.outbox.send(frame)

        let (seconds, attoseconds) = timeout.components
        let deadline = DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        if waiter.done.wait(timeout: deadline) == .timedOut {
            let stillWaiting = state.withLock { $0.waiting.removeValue(forKey: id) } != nil
            if stillWaiting {
                drop(connection.generation, reason: "request \(id) waited \(timeout) for its reply")
                throw RPCError(code: .deadlineExceeded, message: "\(owner) did not answer within \(timeout)", cause: BlockWireConnectionFailure())
            }
            waiter.done.wait()  // answered while the deadline passed: the reply is set or about to be
        }
        return try waiter.outcome!.get()
    }

    /// Closes the connection; later calls fail UNAVAILABLE (the export is closed).
    func close() {
        let connection = state.withLock { state -> Connection? in
            state.closed = true
            defer { state.connection = nil }
            return state.connection
        }
        connection?.channel.close(promise: nil)
    }

    // MARK: - The connection

    private func currentConnection() throws(RPCError) -> Connection {
        if let connection = try existing() { return connection }
        return try connecting.withLock { _ throws(RPCError) -> Connection in
            if let connection = try existing() { return connection }
            return try connect()
        }
    }

    private func existing() throws(RPCError) -> Connection? {
        try state.withLock { state throws(RPCError) in
            guard !state.closed else { throw RPCError(code: .unavailable, message: "the link to \(owner) is closed") }
            return state.connection
        }
    }

    /// Connects, completes the TLS handshake and opens the session; blocks this thread meanwhile.
    private func connect() throws(RPCError) -> Connection {
        let generation = state.withLock { state -> UInt64 in
            state.generations += 1
            return state.generations
        }
        let handler = BlockWireClientHandler(channel: self, generation: generation, eventLoop: dialer.group.next())
        let channel: any Channel
        do {
            channel = try ClientBootstrap(group: dialer.group)
                .connectTimeout(Self.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { [dialer] channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(try NIOSSLClientHandler(context: dialer.tls, serverHostname: nil))
                        try sync.addHandler(ByteToMessageHandler(BlockWireReplyDecoder()))
                        try sync.addHandler(handler)
                    }
                }
                .connect(host: owner.host, port: port).wait()
        } catch {
            handler.negotiated.fail(error)
            throw RPCError(code: .unavailable, message: "no block wire to \(owner) on port \(port): \(error)", cause: BlockWireConnectionFailure())
        }
        // An owner that takes the connection but never completes the handshake is not waited on.
        let handshakeTimer = channel.eventLoop.scheduleTask(in: Self.connectTimeout) { [handler] in
            handler.negotiated.fail(ChannelError.connectTimeout(Self.connectTimeout))
        }
        do {
            try handler.negotiated.futureResult.wait()
            handshakeTimer.cancel()
        } catch {
            channel.close(promise: nil)
            handler.negotiated.fail(error)
            throw RPCError(code: .unavailable, message: "no block wire to \(owner) on port \(port): \(error)", cause: BlockWireConnectionFailure())
        }
        var open = channel.allocator.buffer(capacity: 256)
        let sessionBytes: [UInt8]
        do { sessionBytes = try session.serializedBytes() } catch {
            channel.close(promise: nil)
            throw RPCError(code: .internalError, message: "the session cannot be encoded: \(error)")
        }
        BlockWire.writeRequestHeader(.open, id: 0, offset: 0, length: 0, payloadLength: sessionBytes.count, to: &open)
        open.writeBytes(sessionBytes)
        channel.writeAndFlush(open, promise: nil)

        let connection = Connection(generation: generation, channel: channel, outbox: BlockWireOutbox(channel: channel))
        let installed = state.withLock { state -> Bool in
            guard !state.closed, state.endedGeneration < generation else { return false }
            state.connection = connection
            return true
        }
        guard installed else {
            channel.close(promise: nil)
            throw RPCError(code: .unavailable, message: "the block wire to \(owner) ended as it opened", cause: BlockWireConnectionFailure())
        }
        return connection
    }

    /// A reply arrived on the connection of `generation` (on its event loop).
    fileprivate func complete(_ reply: BlockWire.Reply, generation: UInt64) {
        if reply.id == 0 {
            // The session's own reply: a refusal means no request on this connection can succeed.
            if reply.code != 0 { fail(generation, with: Self.error(reply)) }
            return
        }
        let waiter = state.withLock { state -> Waiter? in
            guard let entry = state.waiting[reply.id], entry.generation == generation else { return nil }
            state.waiting[reply.id] = nil
            return entry.waiter
        }
        guard let waiter else { return }
        waiter.finish(reply.code == 0 ? .success(reply.payload) : .failure(Self.error(reply)))
    }

    private static func error(_ reply: BlockWire.Reply) -> RPCError {
        let code = Status.Code(rawValue: Int(reply.code)).flatMap(RPCError.Code.init) ?? .unknown
        let message = reply.payload.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
        return RPCError(code: code, message: message)
    }

    /// The connection of `generation` ended: its waiting requests fail with `error`, and the
    /// next call makes a new connection.
    fileprivate func fail(_ generation: UInt64, with error: RPCError) {
        let (failed, channel) = state.withLock { state -> ([Waiter], (any Channel)?) in
            state.endedGeneration = max(state.endedGeneration, generation)
            var channel: (any Channel)?
            if state.connection?.generation == generation {
                channel = state.connection?.channel
                state.connection = nil
            }
            let ids = state.waiting.filter { $0.value.generation == generation }.map(\.key)
            return (ids.compactMap { state.waiting.removeValue(forKey: $0)?.waiter }, channel)
        }
        channel?.close(promise: nil)
        for waiter in failed { waiter.finish(.failure(error)) }
    }

    private func drop(_ generation: UInt64, reason: String) {
        fail(generation, with: RPCError(code: .unavailable, message: "the block wire to \(owner) was dropped: \(reason)", cause: BlockWireConnectionFailure()))
    }
}

/// The requests the workers wrote since the connection's event loop last took them: the first
/// one wakes the loop, and the loop writes them all and flushes once. Each wake-up is an eventfd
/// write and each flush a send(2) of what TLS sealed; at depth 32 many requests share both.
final class BlockWireOutbox: Sendable {
    private let channel: any Channel
    private let pending = Mutex<(frames: [ByteBuffer], scheduled: Bool)>(([], false))

    init(channel: any Channel) {
        self.channel = channel
    }

    func send(_ frame: ByteBuffer) {
        let wake = pending.withLock { pending -> Bool in
            pending.frames.append(frame)
            defer { pending.scheduled = true }
            return !pending.scheduled
        }
        if wake { channel.eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let frames = pending.withLock { pending -> [ByteBuffer] in
            defer {
                pending.frames.removeAll(keepingCapacity: true)
                pending.scheduled = false
            }
            return pending.frames
        }
        for frame in frames { channel.write(frame, promise: nil) }
        channel.flush()
    }
}

/// The asker's end of one connection: replies to the waiting workers, the connection's end to
/// all of them.
private final class BlockWireClientHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = BlockWire.Reply

    private let channel: BlockWireChannel
    private let generation: UInt64
    /// Succeeds once TLS is up with the block wire's ALPN protocol; fails if the connection ends
    /// first or the owner speaks something else.
    let negotiated: EventLoopPromise<Void>

    init(channel: BlockWireChannel, generation: UInt64, eventLoop: any EventLoop) {
        self.channel = channel
        self.generation = generation
        negotiated = eventLoop.makePromise()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiatedProtocol) = event as? TLSUserEvent {
            if negotiatedProtocol == BlockWire.applicationProtocol {
                negotiated.succeed()
            } else {
                negotiated.fail(BlockWire.ProtocolViolation("the owner negotiated \(negotiatedProtocol ?? "no protocol"), not \(BlockWire.applicationProtocol)"))
                context.close(promise: nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context _: ChannelHandlerContext, data: NIOAny) {
        channel.complete(unwrapInboundIn(data), generation: generation)
    }

    func channelInactive(context: ChannelHandlerContext) {
        negotiated.fail(ChannelError.ioOnClosedChannel)
        channel.fail(generation, with: RPCError(code: .unavailable, message: "the block wire to \(channel.owner) closed", cause: BlockWireConnectionFailure()))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        negotiated.fail(error)
        context.close(promise: nil)
    }
}
