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
    /// The admin socket: the owner (root) only.
    static let ownerOnlyPermissions: mode_t = 0o600
    var permissions = Self.socketPermissions

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        // Bound under a private temporary name, given its permissions, then renamed into place:
        // nobody can connect to the final path before it is 0660, and no process-wide umask is
        // touched (threads creating files meanwhile keep their modes).
        let temporaryPath = endpoint.path + ".\(getpid()).binding"
        unlink(temporaryPath)
        let channel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                listenerConfigurator.configure(channel: channel)
            }
            .bind(unixDomainSocketPath: temporaryPath, cleanupExistingSocketFile: false) { channel in
                channel.eventLoop.makeCompletedFuture { [answersPings] in
                    if answersPings { try channel.pipeline.syncOperations.addHandler(PingResponder()) }
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: .none)
                }
            }
        guard chmod(temporaryPath, permissions) == 0 else {
            let error = errno
            unlink(temporaryPath)
            try? await channel.channel.close()
            throw EndpointError("cannot set permissions on \(temporaryPath): \(String(cString: strerror(error)))")
        }
        // link(2), unlike rename(2), fails on an existing name: a socket another driver bound
        // since the check is never replaced.
        guard link(temporaryPath, endpoint.path) == 0 else {
            let error = errno
            unlink(temporaryPath)
            try? await channel.channel.close()
            throw EndpointError(error == EEXIST
                ? "\(endpoint.path) appeared while starting: another process is serving on it"
                : "cannot create \(endpoint.path): \(String(cString: strerror(error)))")
        }
        unlink(temporaryPath)
        ownership.bound.store(true, ordering: .releasing)
        return channel
    }
}

final class SocketOwnership: Sendable {
    let bound = Atomic<Bool>(false)
    var ownsSocketFile: Bool { bound.load(ordering: .acquiring) }
}
