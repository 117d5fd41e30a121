#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import Synchronization

/// Listens on a Unix socket with mode 0660 and puts a `PingResponder` in front of each
/// connection's HTTP/2 pipeline (see `PingResponder` for why).
struct UnixSocketListenerFactory: HTTP2ServerTransport.ListenerFactory {
    let endpoint: UnixSocketEndpoint
    let eventLoopGroup: any EventLoopGroup
    var answersPings = true
    /// Set once this process has bound the socket file: only then is the file ours to remove.
    let ownership = SocketOwnership()

    /// Owner and group may connect (sidecars share the pod); others may not.
    static let socketPermissions: mode_t = 0o660

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        // The umask makes the socket file born without world access: no window in which another
        // user could connect before the chmod below.
        let previousMask = umask(0o117)
        defer { umask(previousMask) }
        let channel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                listenerConfigurator.configure(channel: channel)
            }
            .bind(unixDomainSocketPath: endpoint.path, cleanupExistingSocketFile: false) { channel in
                channel.eventLoop.makeCompletedFuture { [answersPings] in
                    if answersPings { try channel.pipeline.syncOperations.addHandler(PingResponder()) }
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: .none)
                }
            }
        ownership.bound.store(true, ordering: .releasing)
        guard chmod(endpoint.path, Self.socketPermissions) == 0 else {
            throw EndpointError("cannot set permissions on \(endpoint.path): \(String(cString: strerror(errno)))")
        }
        return channel
    }
}

final class SocketOwnership: Sendable {
    let bound = Atomic<Bool>(false)
    var ownsSocketFile: Bool { bound.load(ordering: .acquiring) }
}
