import BlockStore
import GRPCCore
import NIOCore
import PeerProto

/// What the owner does with one block-wire request: the same authorisation and checks as the
/// RemoteVolume calls (`RemoteSessions`: the asking node must stage the volume at its epoch), the
/// store's I/O, and the reply framed in one buffer (a read's bytes land in it straight from the
/// store: no copy between the file and the socket but the kernel's and TLS's).
struct BlockWireServing: Sendable {
    let host: any RemoteStagingHost
    let sessions: RemoteSessions

    /// Runs `request` (blocking: the store's I/O) for `session` and frames its reply.
    func answer(_ request: BlockWire.Request, session: Strata_Peer_V1_VolumeSession, allocator: ByteBufferAllocator) -> ByteBuffer {
        do {
            switch request.kind {
            case .read:
                return try read(request, session: session, allocator: allocator)
            case .write:
                let payload = request.payload ?? ByteBuffer()
                try sessions.withHandle(for: session, host: host) { handle in
                    try Self.requireRange(request.offset, UInt64(payload.readableBytes), within: handle)
                    try payload.withUnsafeReadableBytes { try handle.write($0, at: request.offset) }
                }
            case .discard:
                try sessions.withHandle(for: session, host: host) { handle in
                    try Self.requireRange(request.offset, request.length, within: handle)
                    try handle.discard(at: request.offset, length: request.length)
                }
            case .flush:
                try sessions.withHandle(for: session, host: host) { try $0.flush() }
            case .open:
                throw RPCError(code: .invalidArgument, message: "a connection opens its session once, first")
            }
            return Self.success(request.id, allocator: allocator)
        } catch {
            return Self.refusal(request.id, error, allocator: allocator)
        }
    }

    /// Reads above this are never tried on the event loop: copying them would hold it up.
    static let largestInlineRead = 128 << 10

    /// A read answered at once, on the calling event loop, when the data is in the page cache and
    /// nothing needs a wait (the session is known, the volume's lock is free); nil when it
    /// cannot be (then `answer` runs it on a thread that may block). A refusal the session
    /// already earns (a node not admitted, a stale epoch) is answered here too.
    func answerIfCached(_ request: BlockWire.Request, session: Strata_Peer_V1_VolumeSession, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard request.kind == .read, request.length <= UInt64(Self.largestInlineRead) else { return nil }
        let length = Int(request.length)
        var reply = allocator.buffer(capacity: BlockWire.replyHeaderSize + length)
        BlockWire.writeReplyHeader(id: request.id, code: 0, payloadLength: length, to: &reply)
        do {
            let done = try sessions.withLoadedHandle(for: session) { handle in
                try reply.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { bytes in
                    try handle.readIfCached(into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<length]), at: request.offset) ? length : 0
                } == length
            }
            return done == true ? reply : nil
        } catch let refusal as RPCError {
            return Self.refusal(request.id, refusal, allocator: allocator)
        } catch {
            // Out of range, a closed handle: the blocking path says it with the right code.
            return nil
        }
    }

    private func read(_ request: BlockWire.Request, session: Strata_Peer_V1_VolumeSession, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        guard request.length <= UInt64(RemoteVolumeService.maximumTransfer) else {
            throw RPCError(code: .invalidArgument, message: "length is above \(RemoteVolumeService.maximumTransfer)")
        }
        let length = Int(request.length)
        var reply = allocator.buffer(capacity: BlockWire.replyHeaderSize + length)
        BlockWire.writeReplyHeader(id: request.id, code: 0, payloadLength: length, to: &reply)
        try sessions.withHandle(for: session, host: host) { handle in
            try Self.requireRange(request.offset, request.length, within: handle)
            _ = try reply.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { bytes in
                try handle.read(into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<length]), at: request.offset)
                return length
            }
        }
        return reply
    }

    static func success(_ id: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        var reply = allocator.buffer(capacity: BlockWire.replyHeaderSize)
        BlockWire.writeReplyHeader(id: id, code: 0, payloadLength: 0, to: &reply)
        return reply
    }

    /// The refusal the RemoteVolume call would have failed with: its code and message.
    static func refusal(_ id: UInt64, _ error: any Error, allocator: ByteBufferAllocator) -> ByteBuffer {
        let rpcError: RPCError
        if let error = error as? RPCError {
            rpcError = error
        } else if let convertible = error as? any RPCErrorConvertible {
            rpcError = RPCError(convertible)
        } else {
            rpcError = RPCError(code: .internalError, message: "block request failed on the owner: \(error)")
        }
        let message = Array(rpcError.message.utf8.prefix(4096))
        var reply = allocator.buffer(capacity: BlockWire.replyHeaderSize + message.count)
        BlockWire.writeReplyHeader(id: id, code: UInt32(rpcError.code.rawValue), payloadLength: message.count, to: &reply)
        reply.writeBytes(message)
        return reply
    }

    private static func requireRange(_ offset: UInt64, _ length: UInt64, within handle: VolumeHandle) throws {
        let size = handle.size
        guard offset <= size, length <= size - offset else {
            throw RPCError(code: .outOfRange, message: "\(length) bytes at \(offset) pass the end of the volume (\(size) bytes)")
        }
    }

    /// The session an open request names, checked as every RemoteVolume request's is.
    static func session(from request: BlockWire.Request) throws -> Strata_Peer_V1_VolumeSession {
        guard request.kind == .open, let payload = request.payload else {
            throw RPCError(code: .invalidArgument, message: "a connection's first request opens its session")
        }
        let session: Strata_Peer_V1_VolumeSession
        do {
            session = try Strata_Peer_V1_VolumeSession(serializedBytes: Array(payload.readableBytesView))
        } catch {
            throw RPCError(code: .invalidArgument, message: "the session is not a VolumeSession: \(error)")
        }
        try PeerRequestRules.requireID(session.volumeID, field: "volume_id")
        try PeerRequestRules.requireNode(session.nodeID)
        return session
    }
}
