import Dispatch
import Foundation
import GRPCCore
import PeerProto

/// The owner's side of the Exchange stream: the stager's block requests, many in flight on one
/// stream, each run as its unary call would be (same authorisation, same checks) on the block
/// I/O threads (BlockingWork), and answered as it completes. Nothing per request touches the
/// cooperative threads but reading the request and writing the reply.
extension RemoteVolumeService {
    /// Requests of one stream being served at once; later ones wait to be read (HTTP/2 flow
    /// control then slows the sender), so a peer cannot queue unbounded work here.
    static let exchangeConcurrency = 64

    func exchange(
        request requests: RPCAsyncSequence<Strata_Peer_V1_BlockRequest, any Error>,
        response: RPCWriter<Strata_Peer_V1_BlockReply>,
        context _: ServerContext
    ) async throws {
        let (replies, sink) = AsyncStream.makeStream(of: Strata_Peer_V1_BlockReply.self)
        let limit = InFlightLimit(Self.exchangeConcurrency)
        let outstanding = DispatchGroup()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await reply in replies { try await response.write(reply) }
            }
            do {
                for try await request in requests {
                    await limit.acquire()
                    outstanding.enter()
                    BlockingWork.submitBlockIO {
                        sink.yield(answer(request))
                        limit.release()
                        outstanding.leave()
                    }
                }
            } catch {
                // The asker went away or cancelled: what is running still ends before the
                // handler does, so no request outlives its stream unseen.
                await Self.wait(for: outstanding)
                sink.finish()
                throw error
            }
            await Self.wait(for: outstanding)
            sink.finish()
            try await group.waitForAll()
        }
    }

    /// Runs one request (blocking) and says how it ended.
    func answer(_ request: Strata_Peer_V1_BlockRequest) -> Strata_Peer_V1_BlockReply {
        var reply = Strata_Peer_V1_BlockReply()
        reply.id = request.id
        do {
            switch request.operation {
            case .read: reply.data = try readBlock(request.session, at: request.offset, length: request.length)
            case .write: try writeBlock(request.session, request.data, at: request.offset)
            case .discard: try discardBlock(request.session, at: request.offset, length: request.length)
            case .flush: try flushBlocks(request.session)
            case .unspecified, .UNRECOGNIZED:
                throw RPCError(code: .invalidArgument, message: "block request \(request.id) names no operation this node knows")
            }
        } catch {
            let refusal = Self.rpcError(error)
            reply.code = Int32(refusal.code.rawValue)
            reply.message = refusal.message
        }
        return reply
    }

    /// The code and message the unary call would have failed with.
    private static func rpcError(_ error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        if let convertible = error as? any RPCErrorConvertible { return RPCError(convertible) }
        return RPCError(code: .internalError, message: "block request failed on the owner: \(error)")
    }

    private static func wait(for group: DispatchGroup) async {
        await withCheckedContinuation { continuation in
            group.notify(queue: .global()) { continuation.resume() }
        }
    }
}
