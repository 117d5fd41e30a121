import Dispatch
import GRPCCore
import PeerProto
import Synchronization

/// One long-lived Exchange stream to a volume's owner, shared by every FUSE worker thread that
/// serves the volume: a worker hands its request to the stream and blocks until its reply
/// arrives, while the others' requests travel beside it. A request costs one message each way,
/// not a call (no stream setup, headers or deadline timer per I/O), and no Swift task of its own.
///
/// The stream is opened on first use and again after it ends. When it ends (the owner went away,
/// or a request waited past its deadline and the stream was dropped), every request still
/// waiting on it fails UNAVAILABLE, and its caller sends it again: block requests are idempotent.
final class RemoteIOChannel: Sendable {
    private let owner: PeerEndpoint
    private let connector: any PeerConnecting

    /// Where a waiting worker finds its reply. Written once, before `done` is signalled, and read
    /// only after the worker's wait on `done` returned: the semaphore orders the two.
    private final class Waiter: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var outcome: Result<Strata_Peer_V1_BlockReply, RPCError>?

        func finish(_ outcome: Result<Strata_Peer_V1_BlockReply, RPCError>) {
            self.outcome = outcome
            done.signal()
        }
    }

    private struct OpenStream {
        let generation: UInt64
        let sink: AsyncStream<Strata_Peer_V1_BlockRequest>.Continuation
        let task: Task<Void, Never>
    }

    private struct State {
        var nextID: UInt64 = 1
        var generations: UInt64 = 0
        var stream: OpenStream?
        var waiting: [UInt64: (generation: UInt64, waiter: Waiter)] = [:]
        var closed = false
        /// The owner answered UNIMPLEMENTED: its driver predates the stream. Kept, so that
        /// callers arriving after that answer learn it at once instead of each asking again.
        var unsupported: RPCError?
    }

    private let state = Mutex(State())
    private static let streamOptions = PeerClientPool.options(timeout: PeerClientPool.streamTimeout)

    init(owner: PeerEndpoint, connector: any PeerConnecting) {
        self.owner = owner
        self.connector = connector
    }

    /// Sends `request` (its id is set here) and waits on this thread for the reply. Throws
    /// UNAVAILABLE when the stream ended first, DEADLINE_EXCEEDED when no reply came within
    /// `timeout` (the stream is then dropped: an owner that stops answering is treated as gone),
    /// UNIMPLEMENTED when the owner's driver predates the stream.
    func call(_ request: Strata_Peer_V1_BlockRequest, timeout: Duration) throws(RPCError) -> Strata_Peer_V1_BlockReply {
        let waiter = Waiter()
        let (sink, generation, id) = try state.withLock { state throws(RPCError) in
            guard !state.closed else { throw RPCError(code: .unavailable, message: "the link to \(owner) is closed") }
            if let unsupported = state.unsupported { throw unsupported }
            let stream = state.stream ?? openStream(&state)
            let id = state.nextID
            state.nextID &+= 1
            state.waiting[id] = (stream.generation, waiter)
            return (stream.sink, stream.generation, id)
        }
        var request = request
        request.id = id
        if case .terminated = sink.yield(request) {
            _ = state.withLock { $0.waiting.removeValue(forKey: id) }
            drop(generation, reason: "its request stream had ended")
            throw RPCError(code: .unavailable, message: "the stream to \(owner) had ended")
        }
        let (seconds, attoseconds) = timeout.components
        let deadline = DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        if waiter.done.wait(timeout: deadline) == .timedOut {
            let stillWaiting = state.withLock { $0.waiting.removeValue(forKey: id) } != nil
            if stillWaiting {
                drop(generation, reason: "request \(id) waited \(timeout) for its reply")
                throw RPCError(code: .deadlineExceeded, message: "\(owner) did not answer within \(timeout)")
            }
            waiter.done.wait()  // answered while the deadline passed: the reply is set or about to be
        }
        return try waiter.outcome!.get()
    }

    /// Ends the stream; later calls fail UNAVAILABLE (the export is closed).
    func close() {
        let stream = state.withLock { state -> OpenStream? in
            state.closed = true
            defer { state.stream = nil }
            return state.stream
        }
        stream?.sink.finish()
        stream?.task.cancel()
    }

    // MARK: - The stream

    private func openStream(_ state: inout State) -> OpenStream {
        state.generations += 1
        let generation = state.generations
        let (requests, sink) = AsyncStream.makeStream(of: Strata_Peer_V1_BlockRequest.self)
        let task = Task { [self] in
            var ending = RPCError(code: .unavailable, message: "the stream to \(owner) ended")
            do {
                try await connector.withRemoteVolumeClient(owner) { client in
                    try await client.exchange(
                        options: Self.streamOptions,
                        requestProducer: { writer in
                            for await request in requests { try await writer.write(request) }
                        },
                        onResponse: { response in
                            for try await reply in response.messages { self.complete(reply, generation: generation) }
                        })
                }
            } catch let error as RPCError {
                ending = RPCError(code: error.code == .unimplemented ? .unimplemented : .unavailable, message: error.message)
            } catch {
                ending = RPCError(code: .unavailable, message: "the stream to \(owner) failed: \(error)")
            }
            fail(generation, with: ending)
        }
        let stream = OpenStream(generation: generation, sink: sink, task: task)
        state.stream = stream
        return stream
    }

    private func complete(_ reply: Strata_Peer_V1_BlockReply, generation: UInt64) {
        let waiter = state.withLock { state -> Waiter? in
            guard let entry = state.waiting[reply.id], entry.generation == generation else { return nil }
            state.waiting[reply.id] = nil
            return entry.waiter
        }
        waiter?.finish(.success(reply))
    }

    /// The stream of `generation` ended: its waiting requests fail with `error`, and the next
    /// call opens a new stream.
    private func fail(_ generation: UInt64, with error: RPCError) {
        let failed = state.withLock { state -> [Waiter] in
            if error.code == .unimplemented { state.unsupported = error }
            if state.stream?.generation == generation {
                state.stream?.sink.finish()
                state.stream = nil
            }
            let ids = state.waiting.filter { $0.value.generation == generation }.map(\.key)
            return ids.compactMap { state.waiting.removeValue(forKey: $0)?.waiter }
        }
        for waiter in failed { waiter.finish(.failure(error)) }
    }

    /// Stops using the stream of `generation` (the owner does not answer on it, or it had ended):
    /// its waiting requests fail UNAVAILABLE with `reason` now, and the next call opens a new one.
    private func drop(_ generation: UInt64, reason: String) {
        let stream = state.withLock { state -> OpenStream? in
            guard state.stream?.generation == generation else { return nil }
            defer { state.stream = nil }
            return state.stream
        }
        stream?.sink.finish()
        stream?.task.cancel()
        fail(generation, with: RPCError(code: .unavailable, message: "the stream to \(owner) was dropped: \(reason)"))
    }
}
