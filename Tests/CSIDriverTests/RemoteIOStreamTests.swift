import BlockStore
import Dispatch
import Foundation
import GRPCCore
import GRPCInProcessTransport
import PeerProto
import StrataTestSupport
import Synchronization
import Testing
@testable import Peering

/// The remote-I/O link as the FUSE workers of a node serving a volume from its owner use it:
/// many blocking requests in flight at once on one Exchange stream, answered out of order and
/// matched by id; a stream that breaks with requests on it; an owner that refuses; an owner whose
/// driver predates the stream. In process (no root, no network): the subject is the link's and
/// the owner service's logic; the multi-node suites run it over mutual TLS between namespaces.
@Suite("Remote I/O stream", .blockingTolerant)
struct RemoteIOStreamTests {
    @Test("Writes from 16 threads at once read back byte-exact through the link and on the owner's store, over one stream")
    func concurrentRequestsShareOneStream() async throws {
        try await withOwner(.current) { owner, link, calls in
            let written = try await Self.writeAndReadBack(link, threads: 16)
            #expect(calls.count("exchange") == 1, "one stream for every request: \(calls.snapshot)")
            #expect(calls.count("unary") == 0, "no unary call when the stream works: \(calls.snapshot)")
            try Self.expectOnStore(owner, holds: written)
        }
    }

    @Test("Requests on a stream that breaks before answering are sent again on a new one, and nothing is lost")
    func requestsOnABrokenStreamAreSentAgain() async throws {
        try await withOwner(.breaksFirstStream(afterRequests: 6)) { owner, link, calls in
            let written = try await Self.writeAndReadBack(link, threads: 8)
            #expect(calls.count("exchange") >= 2, "the broken stream was replaced: \(calls.snapshot)")
            #expect(link.unreachableSince == nil, "answered again: the link is not reported unreachable")
            try Self.expectOnStore(owner, holds: written)
        }
    }

    @Test("An owner whose driver predates the stream is served over the unary calls")
    func ownerWithoutTheStreamIsServedUnary() async throws {
        try await withOwner(.predatesStream) { owner, link, calls in
            let written = try await Self.writeAndReadBack(link, threads: 4)
            #expect(calls.count("exchange") == 1, "asked once, then no more: \(calls.snapshot)")
            #expect(calls.count("unary") > 0)
            try Self.expectOnStore(owner, holds: written)
        }
    }

    @Test("A node the owner does not admit reads and writes nothing; a stale epoch is fenced")
    func refusalsKeepTheirCode() async throws {
        try await withOwner(.current) { owner, link, _ in
            #expect(try await Self.strangerAndStaleWrites(owner, link) == ["\(RPCError.Code.permissionDenied)", "fenced"])
            try Self.expectFirstBlockUnwritten(owner, link.volumeID, "a refused write changed nothing")
        }
    }

    /// A 4 KiB write at 0 through a link of a node the owner never admitted, then through a link of
    /// the admitted node at a stale epoch: how each ended.
    static func strangerAndStaleWrites(_ owner: OwnerHost, _ link: RemoteVolumeLink) async throws -> [String] {
        let volume = try owner.store().volume(id: link.volumeID)
        let stranger = RemoteVolumeLink(
            volumeID: link.volumeID, nodeID: "node-c", owner: link.owner, epoch: volume.epoch, size: link.size, connector: link.connector)
        let stale = RemoteVolumeLink(
            volumeID: link.volumeID, nodeID: "node-b", owner: link.owner, epoch: volume.epoch + 1, size: link.size, connector: link.connector)
        defer { stranger.close(); stale.close() }
        return try await onWorkerThread { () -> [String] in
            let block = [UInt8](repeating: 0xEE, count: 4096)
            var seen: [String] = []
            for link in [stranger, stale] {
                do {
                    try block.withUnsafeBytes { try link.write($0, at: 0) }
                    seen.append("accepted")
                } catch let error as RPCError {
                    seen.append("\(error.code)")
                } catch is VolumeFenced {
                    seen.append("fenced")
                } catch {
                    seen.append("\(error)")
                }
            }
            return seen
        }
    }

    static func expectFirstBlockUnwritten(_ owner: OwnerHost, _ volumeID: String, _ what: Comment) throws {
        let handle = try owner.store().open(volumeID: volumeID)
        defer { try? handle.close() }
        var first = [UInt8](repeating: 1, count: 4096)
        try first.withUnsafeMutableBytes { try handle.read(into: $0, at: 0) }
        #expect(first == [UInt8](repeating: 0, count: 4096), what)
    }

    // MARK: - The owner and the link

    enum Behaviour: Sendable {
        case current
        /// Reads this many requests from the first stream, answers none, and fails it UNAVAILABLE.
        case breaksFirstStream(afterRequests: Int)
        /// UNIMPLEMENTED to the stream, as a driver of the previous release answers.
        case predatesStream
    }

    static let volumeSize: UInt64 = 8 << 20

    private func withOwner(
        _ behaviour: Behaviour, _ body: @escaping @Sendable (OwnerHost, RemoteVolumeLink, CallCounter) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        let store = try BlockStore(directory: directory.path, options: StoreOptions(backgroundFlatten: false))
        defer { store.close() }
        let volume = try store.createVolume(name: "rwx", size: Self.volumeSize, clusterSize: 65536, multiNode: true)
        _ = try store.addRemoteStager("node-b", toVolume: volume.id)
        let host = OwnerHost(store: store)
        let calls = CallCounter()
        let service = OwnerService(inner: RemoteVolumeService(host: host, sessions: RemoteSessions()), behaviour: behaviour, calls: calls)
        let transport = InProcessTransport()
        let server = GRPCServer(transport: transport.server, services: [service])
        let client = GRPCClient(transport: transport.client)
        let link = RemoteVolumeLink(
            volumeID: volume.id, nodeID: "node-b", owner: PeerEndpoint(host: "192.0.2.1", port: 9821, nodeID: "node-a"),
            epoch: volume.epoch, size: volume.size, connector: InProcessConnector(client: client))
        let outcome: Result<Void, any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await server.serve() }
            group.addTask { try? await client.runConnections() }
            let outcome: Result<Void, any Error>
            do { outcome = .success(try await body(host, link, calls)) } catch { outcome = .failure(error) }
            link.close()
            server.beginGracefulShutdown()
            client.beginGracefulShutdown()
            return outcome
        }
        try outcome.get()
    }

    /// Each thread writes its own region in pieces of varied sizes (4 KiB to 256 KiB), flushes,
    /// then reads every piece back; all at once. Returns what was written where.
    static func writeAndReadBack(_ link: RemoteVolumeLink, threads: Int) async throws -> [(offset: UInt64, bytes: [UInt8])] {
        let region = Int(volumeSize) / threads
        let results = try await withThrowingTaskGroup(of: [(offset: UInt64, bytes: [UInt8])].self) { group in
            for thread in 0..<threads {
                group.addTask {
                    try await onWorkerThread {
                        var generator = SeededGenerator(seed: UInt64(thread) &+ 7)
                        var pieces: [(offset: UInt64, bytes: [UInt8])] = []
                        var offset = thread * region
                        while true {
                            let length = 4096 << Int(generator.next() % 7)
                            guard offset + length <= (thread + 1) * region else { break }
                            var bytes = [UInt8](repeating: 0, count: length)
                            bytes.withUnsafeMutableBytes { raw in
                                for offset in stride(from: 0, to: length, by: 8) {
                                    raw.storeBytes(of: generator.next(), toByteOffset: offset, as: UInt64.self)
                                }
                            }
                            try bytes.withUnsafeBytes { try link.write($0, at: UInt64(offset)) }
                            pieces.append((UInt64(offset), bytes))
                            offset += length + 4096
                        }
                        try link.flush()
                        for piece in pieces {
                            var read = [UInt8](repeating: 0, count: piece.bytes.count)
                            try read.withUnsafeMutableBytes { try link.read(into: $0, at: piece.offset) }
                            guard read == piece.bytes else { throw TestFailure("\(piece.bytes.count) bytes at \(piece.offset) read back different") }
                        }
                        return pieces
                    }
                }
            }
            var all: [(offset: UInt64, bytes: [UInt8])] = []
            for try await pieces in group { all += pieces }
            return all
        }
        #expect(results.count > threads, "each thread wrote several pieces")
        return results
    }

    static func expectOnStore(_ owner: OwnerHost, holds pieces: [(offset: UInt64, bytes: [UInt8])]) throws {
        let store = try owner.store()
        let volumeID = try #require(try store.listVolumes(after: nil, limit: 0).items.first?.id)
        let handle = try store.open(volumeID: volumeID)
        defer { try? handle.close() }
        for piece in pieces {
            var read = [UInt8](repeating: 0, count: piece.bytes.count)
            try read.withUnsafeMutableBytes { try handle.read(into: $0, at: piece.offset) }
            #expect(read == piece.bytes, "the owner's store holds \(piece.bytes.count) bytes at \(piece.offset)")
        }
    }

    /// Runs blocking link calls on a Dispatch thread, as FUSE worker threads make them.
    /// A FUSE worker's thread (one of its own: see `OwnThreads`).
    static func onWorkerThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await OwnThreads.run(body)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Which RemoteVolume calls the owner served.
final class CallCounter: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func record(_ name: String) { counts.withLock { $0[name, default: 0] += 1 } }
    func count(_ name: String) -> Int { counts.withLock { $0[name] ?? 0 } }
    var snapshot: [String: Int] { counts.withLock { $0 } }
}

/// The owner's driver as the remote-I/O service sees it: its store, every stager admitted
/// beforehand by the test.
final class OwnerHost: RemoteStagingHost {
    let nodeID = "node-a"
    private let openStore: BlockStore

    init(store: BlockStore) { openStore = store }

    func store() throws -> BlockStore { openStore }
    func withVolumeQuiesced<Value: Sendable>(_ volumeID: String, _ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try body()
    }
    func attachRemoteStager(_ node: String, toVolume volumeID: String) async throws -> RemoteStaging {
        throw RPCError(code: .unimplemented, message: "stagers are admitted by the test")
    }
    func detachRemoteStager(_ node: String, fromVolume volumeID: String) async throws {}
    func handleForwardedCall(method: String, request: [UInt8]) async throws -> [UInt8] {
        throw RPCError(code: .unimplemented, message: "no controller here")
    }
}

/// The real service, counted (unary, exchange, describe), and altered as the test asks.
struct OwnerService: Strata_Peer_V1_RemoteVolume.SimpleServiceProtocol {
    let inner: RemoteVolumeService
    let behaviour: RemoteIOStreamTests.Behaviour
    let calls: CallCounter

    func attach(request: Strata_Peer_V1_AttachRequest, context: ServerContext) async throws -> Strata_Peer_V1_AttachResponse {
        try await inner.attach(request: request, context: context)
    }
    func detach(request: Strata_Peer_V1_DetachRequest, context: ServerContext) async throws -> Strata_Peer_V1_DetachResponse {
        try await inner.detach(request: request, context: context)
    }
    func read(request: Strata_Peer_V1_ReadRequest, context: ServerContext) async throws -> Strata_Peer_V1_ReadResponse {
        calls.record("unary")
        return try await inner.read(request: request, context: context)
    }
    func write(request: Strata_Peer_V1_WriteRequest, context: ServerContext) async throws -> Strata_Peer_V1_WriteResponse {
        calls.record("unary")
        return try await inner.write(request: request, context: context)
    }
    func discard(request: Strata_Peer_V1_DiscardRequest, context: ServerContext) async throws -> Strata_Peer_V1_DiscardResponse {
        calls.record("unary")
        return try await inner.discard(request: request, context: context)
    }
    func flush(request: Strata_Peer_V1_FlushRequest, context: ServerContext) async throws -> Strata_Peer_V1_FlushResponse {
        calls.record("unary")
        return try await inner.flush(request: request, context: context)
    }

    func exchange(
        request: RPCAsyncSequence<Strata_Peer_V1_BlockRequest, any Error>, response: RPCWriter<Strata_Peer_V1_BlockReply>,
        context: ServerContext
    ) async throws {
        calls.record("exchange")
        switch behaviour {
        case .current:
            try await inner.exchange(request: request, response: response, context: context)
        case .predatesStream:
            throw RPCError(code: .unimplemented, message: "RemoteVolume/Exchange is not implemented")
        case .breaksFirstStream(let count):
            guard calls.count("exchange") == 1 else {
                return try await inner.exchange(request: request, response: response, context: context)
            }
            var seen = 0
            for try await _ in request {
                seen += 1
                if seen == count { break }
            }
            throw RPCError(code: .unavailable, message: "the connection to the owner broke")
        }
    }

    /// As an owner without a block wire answers (port 0): these tests are of the stream.
    func describeBlockWire(
        request: Strata_Peer_V1_DescribeBlockWireRequest, context: ServerContext
    ) async throws -> Strata_Peer_V1_DescribeBlockWireResponse {
        calls.record("describe")
        return try await inner.describeBlockWire(request: request, context: context)
    }
}
