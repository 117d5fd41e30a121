import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PeerProto
import Synchronization

/// The owner's listener of the block wire (see `BlockWire`): mutual TLS with the peers'
/// certificates, ALPN `strata-block/1` required, then block requests of the sessions the
/// connections open. Requests run on the block I/O threads (the store blocks); their replies
/// are written on the connection's event loop as they complete.
final class BlockWireServer: Sendable {
    private let serverChannel: any Channel
    private let connections: OpenConnections
    /// The port it listens on (the one asked for, or the one the kernel chose for 0).
    let port: Int

    private init(serverChannel: any Channel, connections: OpenConnections, port: Int) {
        self.serverChannel = serverChannel
        self.connections = connections
        self.port = port
    }

    /// The accepted connections, so that closing the listener also ends them (NIO closes only
    /// the listening socket): an owner that stops serving must not go on answering.
    private final class OpenConnections: Sendable {
        private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

        func add(_ channel: any Channel) {
            let key = ObjectIdentifier(channel)
            channels.withLock { $0[key] = channel }
            channel.closeFuture.whenComplete { [self] _ in _ = channels.withLock { $0.removeValue(forKey: key) } }
        }

        func closeAll() {
            for channel in channels.withLock({ Array($0.values) }) { channel.close(promise: nil) }
        }
    }

    /// Listens on `host`:`port` (0: any free port).
    static func start(
        host: String, port: Int, tls: NIOSSLContext, serving: BlockWireServing, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> BlockWireServer {
        let connections = OpenConnections()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: tls))
                    try sync.addHandler(ByteToMessageHandler(BlockWireRequestDecoder()))
                    try sync.addHandler(BlockWireServerHandler(serving: serving, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        guard let bound = channel.localAddress?.port else {
            try? await channel.close()
            throw PeeringError.unavailable("the block wire listener on \(host):\(port) has no port")
        }
        return BlockWireServer(serverChannel: channel, connections: connections, port: bound)
    }

    /// Stops listening and closes every connection.
    func close() async {
        try? await serverChannel.close()
        connections.closeAll()
    }

    static func tlsContext(_ settings: PeerSettings) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(settings.certificatePath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: settings.keyPath, format: .pem)))
        configuration.trustRoots = .file(settings.caPath)
        // Requires a client certificate the CA signed; peers are reached by address and their
        // certificates need not name it (membership is the CA), as on the gRPC port.
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv13
        configuration.applicationProtocols = [BlockWire.applicationProtocol]
        return try NIOSSLContext(configuration: configuration)
    }
}

/// One connection's requests: the first opens its session, each later one runs on the block I/O
/// threads and is answered when done. At most `concurrency` run at once; past that, the
/// connection is not read (TCP then slows the asker), so a peer cannot queue unbounded work.
final class BlockWireServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = BlockWire.Request
    typealias OutboundOut = ByteBuffer

    static let concurrency = 64

    private let serving: BlockWireServing
    private let logger: Logger
    private var negotiated = false
    private var session: Strata_Peer_V1_VolumeSession?
    private var running = 0
    /// Requests read while `concurrency` ran (one read of the socket may hold many): started
    /// as running ones finish, in order.
    private var waiting = CircularBuffer<(BlockWire.Request, Strata_Peer_V1_VolumeSession)>()
    private var readHeld = false
    /// Replies written and not flushed yet: cached reads answered while the socket's bytes are
    /// decoded are flushed together when the read completes, and replies of the block I/O
    /// threads that reach the loop in one turn together at its end (one send(2) for many,
    /// instead of one each).
    private var unflushed = false
    private var flushScheduled = false

    init(serving: BlockWireServing, logger: Logger) {
        self.serving = serving
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiatedProtocol) = event as? TLSUserEvent {
            guard negotiatedProtocol == BlockWire.applicationProtocol else {
                logger.warning("block wire: a peer did not negotiate \(BlockWire.applicationProtocol); closing", metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
                context.close(promise: nil)
                return
            }
            negotiated = true
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = unwrapInboundIn(data)
        guard negotiated else { return context.close(promise: nil) }
        guard let session else {
            do {
                session = try BlockWireServing.session(from: request)
                context.writeAndFlush(wrapOutboundOut(BlockWireServing.success(request.id, allocator: context.channel.allocator)), promise: nil)
            } catch {
                // The connection is of no use without a session: the refusal, then the end.
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(BlockWireServing.refusal(request.id, error, allocator: channel.allocator)))
                    .whenComplete { _ in channel.close(promise: nil) }
            }
            return
        }
        // A read the page cache holds is answered here, on the event loop: no thread hand-off
        // either way, which is most of a small request's cost.
        if waiting.isEmpty, let reply = serving.answerIfCached(request, session: session, allocator: context.channel.allocator) {
            context.write(wrapOutboundOut(reply), promise: nil)
            unflushed = true
            return
        }
        guard running < Self.concurrency else {
            waiting.append((request, session))
            return
        }
        start(request, session: session, context: context)
    }

    private func start(_ request: BlockWire.Request, session: Strata_Peer_V1_VolumeSession, context: ChannelHandlerContext) {
        running += 1
        let serving = self.serving
        let allocator = context.channel.allocator
        let loop = context.eventLoop
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: loop)
        BlockingWork.submitBlockIO {
            let reply = serving.answer(request, session: session, allocator: allocator)
            loop.execute {
                let (handler, context) = bound.value
                handler.finished(reply, context: context)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        guard unflushed else { return }
        unflushed = false
        context.flush()
    }

    private func finished(_ reply: ByteBuffer, context: ChannelHandlerContext) {
        running -= 1
        guard context.channel.isActive else { return }
        context.write(wrapOutboundOut(reply), promise: nil)
        unflushed = true
        if !flushScheduled {
            // Runs after the tasks already queued on the loop: the other replies finished meanwhile.
            flushScheduled = true
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = bound.value
                handler.flushScheduled = false
                handler.flushIfNeeded(context: context)
            }
        }
        if !waiting.isEmpty {
            let (request, session) = waiting.removeFirst()
            start(request, session: session, context: context)
        }
        if readHeld && waiting.isEmpty && running < Self.concurrency {
            readHeld = false
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("block wire connection failed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

extension BlockWireServerHandler: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer

    /// Holds the connection's reads while `concurrency` requests run.
    func read(context: ChannelHandlerContext) {
        if running >= Self.concurrency || !waiting.isEmpty {
            readHeld = true
        } else {
            context.read()
        }
    }
}
