import Foundation
import GRPCCore
import NIOCore
import PeerProto
import Synchronization

/// Which way a volume link's requests travel to the owner.
enum RemoteIORoute {
    /// The block wire (`BlockWireChannel`).
    case wire
    /// RemoteVolume.Exchange, one gRPC stream.
    case stream
    /// One RemoteVolume unary call per request (owners older than the stream).
    case unary
}

/// What a request answered: a read's bytes as the route carried them.
enum BlockAnswer {
    case buffer(ByteBuffer?)
    case data(Data)

    var count: Int {
        switch self {
        case .buffer(let buffer): buffer?.readableBytes ?? 0
        case .data(let data): data.count
        }
    }

    func copy(into target: UnsafeMutableRawBufferPointer) {
        switch self {
        case .buffer(let buffer): buffer?.withUnsafeReadableBytes { target.copyMemory(from: $0) }
        case .data(let data): data.withUnsafeBytes { target.copyMemory(from: $0) }
        }
    }
}

/// A link's block wire to the owner: found by asking the owner where it serves it
/// (RemoteVolume.DescribeBlockWire) on first use, and again after the connection failed (the
/// owner may have restarted on another port, or as a driver without it). `route()` answers nil
/// while the owner serves none: the link then uses the Exchange stream.
final class BlockWireRoute: Sendable {
    private enum Known {
        case unknown
        case none
        case wire(BlockWireChannel)
    }

    private let owner: PeerEndpoint
    private let session: Strata_Peer_V1_VolumeSession
    private let connector: any PeerConnecting
    private let known = Mutex(Known.unknown)
    private let closed = Atomic<Bool>(false)
    /// One question to the owner at a time; the workers arriving meanwhile take its answer.
    private let asking = Mutex(())

    init(owner: PeerEndpoint, session: Strata_Peer_V1_VolumeSession, connector: any PeerConnecting) {
        self.owner = owner
        self.session = session
        self.connector = connector
    }

    /// The channel to send on, nil to use the Exchange stream; the error of asking the owner
    /// (UNAVAILABLE while it cannot be reached: the caller waits and asks again).
    func route() -> Result<BlockWireChannel?, RPCError> {
        if let settled = settled() { return .success(settled) }
        return asking.withLock { _ in
            if let settled = settled() { return .success(settled) }
            guard let dialer = connector.blockWireDialer else {
                known.withLock { $0 = .none }
                return .success(nil)
            }
            switch describe() {
            case .success(let port) where port > 0 && !closed.load(ordering: .relaxed):
                let channel = BlockWireChannel(owner: owner, port: port, session: session, dialer: dialer)
                known.withLock { $0 = .wire(channel) }
                return .success(channel)
            case .success:
                known.withLock { $0 = .none }
                return .success(nil)
            case .failure(let error) where error.code == .unimplemented:
                known.withLock { $0 = .none }
                return .success(nil)
            case .failure(let error):
                return .failure(error)
            }
        }
    }

    /// `channel` could not reach the owner: the next request asks the owner where its wire is.
    func forget(_ channel: BlockWireChannel) {
        let forgotten = known.withLock { known -> Bool in
            guard case .wire(let current) = known, current === channel else { return false }
            known = .unknown
            return true
        }
        if forgotten { channel.close() }
    }

    func close() {
        closed.store(true, ordering: .relaxed)
        let channel = known.withLock { known -> BlockWireChannel? in
            defer { known = .none }
            if case .wire(let channel) = known { return channel }
            return nil
        }
        channel?.close()
    }

    /// What is known already: the channel, or nil for "no wire"; nil when unknown.
    private func settled() -> BlockWireChannel?? {
        known.withLock { known -> BlockWireChannel?? in
            switch known {
            case .unknown: return nil
            case .none: return .some(nil)
            case .wire(let channel): return .some(channel)
            }
        }
    }

    private func describe() -> Result<Int, RPCError> {
        WaitingThread.run { [connector, owner] in
            try await connector.withRemoteVolumeClient(owner) { client in
                Int(try await client.describeBlockWire(.init(), options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout)).port)
            }
        }.mapError { $0 as? RPCError ?? RPCError(code: .unavailable, message: "\($0)") }
    }
}
