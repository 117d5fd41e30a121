import NIOCore

/// Answers HTTP/2 PING frames before grpc-swift's HTTP/2 handler sees them.
///
/// Why: swift-nio-http2 closes a connection with GOAWAY ENHANCE_YOUR_CALM after 200 inbound
/// PING/SETTINGS frames in 30 s, and grpc-swift-nio-transport does not expose that limit.
/// grpc-go (kubelet and every CSI sidecar) sends a BDP-estimation PING with most responses, so a
/// sidecar making more than ~7 calls a second would be disconnected, and sidecars built on
/// csi-lib-utils exit on any reconnect. This handler sits first in the connection pipeline (put
/// there through the public `HTTP2ServerTransport.ListenerFactory` extension point), splits the
/// inbound byte stream into HTTP/2 frames, answers each non-ACK PING with a PING ACK carrying the
/// same payload (RFC 9113 §6.7) and forwards every other frame untouched. Abuse stays bounded:
/// answering a PING costs one 17-byte write, and frames larger than the peer may send under the
/// default SETTINGS_MAX_FRAME_SIZE are passed through for the HTTP/2 handler to reject.
final class PingResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private static let frameHeaderLength = 9
    private static let pingFrameType: UInt8 = 0x6
    private static let ackFlag: UInt8 = 0x1
    private static let pingPayloadLength = 8

    private var pending: ByteBuffer?
    private var prefaceBytesRemaining = PingResponder.clientPreface.count
    /// Number of PINGs answered on this connection; tests read it through the pipeline.
    private(set) var answeredPings = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            buffered.writeBuffer(&incoming)
            incoming = buffered
            pending = nil
        }

        var forward = context.channel.allocator.buffer(capacity: incoming.readableBytes)
        consumePreface(from: &incoming, into: &forward)

        while prefaceBytesRemaining == 0, let header = frameHeader(in: incoming) {
            let frameLength = Self.frameHeaderLength + header.payloadLength
            guard incoming.readableBytes >= frameLength else { break }
            var frame = incoming.readSlice(length: frameLength)!
            if header.isPingRequest {
                answerPing(frame, context: context)
            } else {
                forward.writeBuffer(&frame)
            }
        }

        if incoming.readableBytes > 0 {
            pending = incoming
        }
        if forward.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(forward))
        }
    }

    /// The client preface is not framed; pass it through as it arrives.
    private func consumePreface(from incoming: inout ByteBuffer, into forward: inout ByteBuffer) {
        guard prefaceBytesRemaining > 0 else { return }
        let count = min(prefaceBytesRemaining, incoming.readableBytes)
        var slice = incoming.readSlice(length: count)!
        forward.writeBuffer(&slice)
        prefaceBytesRemaining -= count
    }

    private struct FrameHeader {
        var payloadLength: Int
        var isPingRequest: Bool
    }

    private func frameHeader(in buffer: ByteBuffer) -> FrameHeader? {
        guard buffer.readableBytes >= Self.frameHeaderLength,
              let bytes = buffer.getBytes(at: buffer.readerIndex, length: Self.frameHeaderLength)
        else { return nil }
        let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
        let type = bytes[3]
        let flags = bytes[4]
        let streamID = (UInt32(bytes[5]) << 24 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 8 | UInt32(bytes[8]))
            & 0x7fff_ffff
        // Only well-formed PINGs are ours; a malformed one goes on so that the HTTP/2 handler
        // answers it with the protocol error the RFC requires.
        let isPingRequest = type == Self.pingFrameType && flags & Self.ackFlag == 0
            && length == Self.pingPayloadLength && streamID == 0
        return FrameHeader(payloadLength: length, isPingRequest: isPingRequest)
    }

    private func answerPing(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        var ack = context.channel.allocator.buffer(capacity: Self.frameHeaderLength + Self.pingPayloadLength)
        ack.writeBytes([0, 0, UInt8(Self.pingPayloadLength), Self.pingFrameType, Self.ackFlag, 0, 0, 0, 0])
        var payload = frame.getSlice(at: frame.readerIndex + Self.frameHeaderLength, length: Self.pingPayloadLength)!
        ack.writeBuffer(&payload)
        answeredPings += 1
        context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
    }
}
