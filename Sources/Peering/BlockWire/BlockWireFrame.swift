import NIOCore

/// The block wire: remote block I/O in a binary framing of its own, on a mutual-TLS connection
/// whose ALPN protocol is `strata-block/1` (which is also the framing's version). It carries what
/// RemoteVolume.Exchange carries, without HTTP/2, gRPC or protobuf per request, so that both
/// sides handle a request on the connection's event loop: a 4 KiB request and its answer cost
/// little more than the bytes and the TLS record.
///
/// Every integer is big-endian.
///
/// A request is a 32-byte header and `payloadLength` bytes:
///
///     u32 payloadLength  u8 kind  u8[3] zero  u64 id  u64 offset  u64 length
///
/// - kind 0, open: the first request of a connection, and only there. Its payload is a
///   `strata.peer.v1.VolumeSession` (protobuf): the volume, the asking node and the epoch that
///   every later request of the connection acts as. It is checked as each request is.
/// - kind 1, read `length` bytes at `offset`; kind 2, write the payload at `offset` (`length` is
///   the payload's length); kind 3, discard `length` bytes at `offset`; kind 4, flush.
///
/// A reply is a 16-byte header and `payloadLength` bytes:
///
///     u32 payloadLength  u32 code  u64 id
///
/// `id` is the request's (the asker picks ids unique among its requests in flight); `code` is a
/// gRPC status code, 0 when the request was done. The payload is what a read read, or, when
/// `code` is not 0, the refusal's message (UTF-8). Replies come as requests complete, in any
/// order. A frame that breaks these rules ends the connection.
enum BlockWire {
    /// The ALPN protocol name, which both sides require.
    static let applicationProtocol = "strata-block/1"
    static let requestHeaderSize = 32
    static let replyHeaderSize = 16
    /// The largest payload either side accepts: a read or write of the most the owner serves in
    /// one request, or a refusal's message.
    static let maximumPayload = RemoteVolumeService.maximumTransfer

    enum Kind: UInt8, Sendable {
        case open = 0
        case read = 1
        case write = 2
        case discard = 3
        case flush = 4
    }

    struct Request: Sendable {
        var kind: Kind
        var id: UInt64
        var offset: UInt64
        var length: UInt64
        /// The bytes to write, or the session of an open.
        var payload: ByteBuffer?
    }

    struct Reply: Sendable {
        var id: UInt64
        /// A gRPC status code; 0 when the request was done.
        var code: UInt32
        /// What a read read, or a refusal's message.
        var payload: ByteBuffer?
    }

    /// The framing was broken: the connection ends.
    struct ProtocolViolation: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func writeRequestHeader(
        _ kind: Kind, id: UInt64, offset: UInt64, length: UInt64, payloadLength: Int, to buffer: inout ByteBuffer
    ) {
        buffer.writeInteger(UInt32(payloadLength))
        buffer.writeInteger(kind.rawValue)
        buffer.writeRepeatingByte(0, count: 3)
        buffer.writeInteger(id)
        buffer.writeInteger(offset)
        buffer.writeInteger(length)
    }

    static func writeReplyHeader(id: UInt64, code: UInt32, payloadLength: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(payloadLength))
        buffer.writeInteger(code)
        buffer.writeInteger(id)
    }
}

/// Splits the owner's inbound bytes into requests.
struct BlockWireRequestDecoder: ByteToMessageDecoder {
    typealias InboundOut = BlockWire.Request

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let request = try Self.take(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(request))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF _: Bool) throws -> DecodingState {
        // A request cut short by the connection's end is dropped: its asker sends it again.
        while let request = try Self.take(from: &buffer) { context.fireChannelRead(Self.wrapInboundOut(request)) }
        return .needMoreData
    }

    /// One whole request from the front of `buffer`, or nil when it has not all arrived.
    static func take(from buffer: inout ByteBuffer) throws -> BlockWire.Request? {
        guard buffer.readableBytes >= BlockWire.requestHeaderSize,
              let payloadLength = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)
        else { return nil }
        guard payloadLength <= BlockWire.maximumPayload else {
            throw BlockWire.ProtocolViolation("a request carries \(payloadLength) bytes, above \(BlockWire.maximumPayload)")
        }
        guard buffer.readableBytes >= BlockWire.requestHeaderSize + Int(payloadLength) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let rawKind = buffer.readInteger(as: UInt8.self)!
        buffer.moveReaderIndex(forwardBy: 3)
        let id = buffer.readInteger(as: UInt64.self)!
        let offset = buffer.readInteger(as: UInt64.self)!
        let length = buffer.readInteger(as: UInt64.self)!
        let payload = payloadLength > 0 ? buffer.readSlice(length: Int(payloadLength)) : nil
        guard let kind = BlockWire.Kind(rawValue: rawKind) else {
            throw BlockWire.ProtocolViolation("request \(id) has kind \(rawKind), which this node does not know")
        }
        return BlockWire.Request(kind: kind, id: id, offset: offset, length: length, payload: payload)
    }
}

/// Splits the asker's inbound bytes into replies.
struct BlockWireReplyDecoder: ByteToMessageDecoder {
    typealias InboundOut = BlockWire.Reply

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let reply = try Self.take(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(reply))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF _: Bool) throws -> DecodingState {
        while let reply = try Self.take(from: &buffer) { context.fireChannelRead(Self.wrapInboundOut(reply)) }
        return .needMoreData
    }

    static func take(from buffer: inout ByteBuffer) throws -> BlockWire.Reply? {
        guard buffer.readableBytes >= BlockWire.replyHeaderSize,
              let payloadLength = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)
        else { return nil }
        guard payloadLength <= BlockWire.maximumPayload else {
            throw BlockWire.ProtocolViolation("a reply carries \(payloadLength) bytes, above \(BlockWire.maximumPayload)")
        }
        guard buffer.readableBytes >= BlockWire.replyHeaderSize + Int(payloadLength) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let code = buffer.readInteger(as: UInt32.self)!
        let id = buffer.readInteger(as: UInt64.self)!
        let payload = payloadLength > 0 ? buffer.readSlice(length: Int(payloadLength)) : nil
        return BlockWire.Reply(id: id, code: code, payload: payload)
    }
}
