import NIOCore
import NIOHTTP1
import NIOPosix

/// Plain HTTP for Prometheus: `GET /metrics` answers the text exposition (produced off the event
/// loop: it reads the catalog); every other path is 404. Nothing else is served.
public final class MetricsEndpoint: Sendable {
    private let channel: any Channel
    /// The port bound (useful when 0 was asked for).
    public let port: Int

    /// Listens on `host:port`; `exposition` runs on a thread pool for each scrape.
    public static func start(host: String, port: Int, exposition: @escaping @Sendable () -> [UInt8]) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ScrapeHandler(exposition: exposition))
                }
            }
            .bind(host: host, port: port)
            .get()
        return MetricsEndpoint(channel: channel, port: channel.localAddress?.port ?? port)
    }

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    public func stop() async {
        try? await channel.close()
    }
}

private final class ScrapeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exposition: @Sendable () -> [UInt8]
    private var head: HTTPRequestHead?

    init(exposition: @escaping @Sendable () -> [UInt8]) {
        self.exposition = exposition
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            guard path == "/metrics" else {
                return respond(context, head, .notFound, Array("only /metrics is served here\n".utf8))
            }
            guard head.method == .GET else {
                return respond(context, head, .methodNotAllowed, Array("GET /metrics\n".utf8))
            }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop, exposition).whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let body): handler.respond(context, head, .ok, body, contentType: "text/plain; version=0.0.4; charset=utf-8")
                case .failure: handler.respond(context, head, .serviceUnavailable, Array("shutting down\n".utf8))
                }
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus,
                         _ body: [UInt8], contentType: String = "text/plain; charset=utf-8") {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let keepAlive = request.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
