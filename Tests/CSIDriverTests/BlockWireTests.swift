import BlockStore
import Foundation
import GRPCCore
import GRPCInProcessTransport
import NIOCore
import PeerProto
import StrataTestSupport
import Synchronization
import Testing
@testable import Peering

/// The block wire (remote block I/O in its own framing, mutual TLS on a port beside the peer
/// protocol's): a volume link finds it by asking the owner, carries every request over it, keeps
/// the owner's refusals and their codes, finds it again when the owner's listener moves, and
/// refuses a stranger's certificate. Over loopback TCP and real TLS, without root; the
/// multi-node suites run it between network namespaces through the drivers.
@Suite("Block wire", .serialized, .blockingTolerant)
struct BlockWireTests {
    @Test("Writes from 16 threads read back byte-exact over the block wire and on the owner's store; no gRPC block call is made")
    func concurrentRequestsTravelOverTheWire() async throws {
        try await withWireOwner { owner, link, calls, _ in
            let written = try await RemoteIOStreamTests.writeAndReadBack(link, threads: 16)
            #expect(calls.count("describe") == 1, "the link asked the owner where its wire is once: \(calls.snapshot)")
            #expect(calls.count("exchange") == 0 && calls.count("unary") == 0, "no block request over gRPC: \(calls.snapshot)")
            try RemoteIOStreamTests.expectOnStore(owner, holds: written)
        }
    }

    @Test("A node the owner does not admit reads and writes nothing over the wire; a stale epoch is fenced")
    func refusalsKeepTheirCode() async throws {
        try await withWireOwner { owner, link, calls, _ in
            #expect(try await RemoteIOStreamTests.strangerAndStaleWrites(owner, link) == ["\(RPCError.Code.permissionDenied)", "fenced"])
            #expect(calls.count("exchange") == 0 && calls.count("unary") == 0, "refused over the wire, not over gRPC: \(calls.snapshot)")
            try RemoteIOStreamTests.expectFirstBlockUnwritten(owner, link.volumeID, "a refused write changed nothing")
        }
    }

    @Test("When the owner's wire moves to another port, the link asks the owner again and goes on; nothing is lost")
    func theLinkFindsAMovedWire() async throws {
        try await withWireOwner { owner, link, calls, wire in
            let before = try await RemoteIOStreamTests.writeAndReadBack(link, threads: 4)
            try await wire.restart()
            let after = try await RemoteIOStreamTests.writeAndReadBack(link, threads: 4)
            #expect(calls.count("describe") >= 2, "asked again after the connection failed: \(calls.snapshot)")
            #expect(calls.count("exchange") == 0 && calls.count("unary") == 0, "still over the wire: \(calls.snapshot)")
            #expect(link.unreachableSince == nil, "answered again: the link is not reported unreachable")
            // Both rounds wrote the same regions with the same generator: the second's bytes stand.
            try RemoteIOStreamTests.expectOnStore(owner, holds: after)
            #expect(before.count == after.count)
        }
    }

    @Test("A peer whose certificate another CA signed is refused at the handshake and reaches nothing")
    func aStrangersCertificateIsRefused() async throws {
        try await withWireOwner { owner, link, _, wire in
            var foreign = PeerSettings(tlsDirectory: "\(wire.certificates)/foreign")
            foreign.listenAddress = nil
            let dialer = BlockWireDialer(tls: try BlockWireDialer.tlsContext(foreign))
            let session = Strata_Peer_V1_VolumeSession.with { $0.volumeID = link.volumeID; $0.nodeID = "node-b"; $0.epoch = link.epoch }
            let channel = BlockWireChannel(owner: link.owner, port: wire.port, session: session, dialer: dialer)
            defer { channel.close() }
            let outcome = try await RemoteIOStreamTests.onWorkerThread { () -> String in
                let block = [UInt8](repeating: 0xAB, count: 4096)
                do {
                    _ = try block.withUnsafeBytes { try channel.call(.write, offset: 0, length: 4096, payload: $0, timeout: .seconds(10)) }
                    return "accepted"
                } catch let error as RPCError {
                    return "\(error.code)"
                } catch {
                    return "\(error)"
                }
            }
            #expect(outcome == "\(RPCError.Code.unavailable)", "no connection for a stranger")
            try RemoteIOStreamTests.expectFirstBlockUnwritten(owner, link.volumeID, "the stranger wrote nothing")
        }
    }

    @Test("Frames that break the framing are refused: a payload above the limit, an unknown kind")
    func brokenFramesAreRefused() throws {
        var oversized = ByteBuffer()
        BlockWire.writeRequestHeader(.write, id: 1, offset: 0, length: 0, payloadLength: BlockWire.maximumPayload + 1, to: &oversized)
        #expect(throws: BlockWire.ProtocolViolation.self) { try BlockWireRequestDecoder.take(from: &oversized) }

        var unknown = ByteBuffer()
        BlockWire.writeRequestHeader(.read, id: 2, offset: 0, length: 4096, payloadLength: 0, to: &unknown)
        unknown.setInteger(UInt8(9), at: 4)
        #expect(throws: BlockWire.ProtocolViolation.self) { try BlockWireRequestDecoder.take(from: &unknown) }

        var partial = ByteBuffer()
        BlockWire.writeRequestHeader(.write, id: 3, offset: 0, length: 8, payloadLength: 8, to: &partial)
        partial.writeBytes([1, 2, 3])
        #expect(try BlockWireRequestDecoder.take(from: &partial) == nil, "a request whose payload has not all arrived waits")
        partial.writeBytes([4, 5, 6, 7, 8])
        let whole = try #require(try BlockWireRequestDecoder.take(from: &partial))
        #expect(whole.id == 3 && whole.kind == .write && whole.payload.map { Array($0.readableBytesView) } == [1, 2, 3, 4, 5, 6, 7, 8])

        var reply = ByteBuffer()
        BlockWire.writeReplyHeader(id: 4, code: 7, payloadLength: 2, to: &reply)
        reply.writeBytes([0x6E, 0x6F])
        let decoded = try #require(try BlockWireReplyDecoder.take(from: &reply))
        #expect(decoded.id == 4 && decoded.code == 7 && decoded.payload.map { String(decoding: $0.readableBytesView, as: UTF8.self) } == "no")
    }

    // MARK: - The owner

    /// The owner's block wire on loopback, restartable on another port.
    final class WireListener: Sendable {
        let certificates: String
        private let serving: BlockWireServing
        private let settings: PeerSettings
        private let wirePort: BlockWirePort
        private let server: Mutex<BlockWireServer?>

        init(certificates: String, serving: BlockWireServing, wirePort: BlockWirePort) async throws {
            self.certificates = certificates
            self.serving = serving
            self.wirePort = wirePort
            settings = PeerSettings(tlsDirectory: "\(certificates)/tls")
            server = Mutex(nil)
            try await start()
        }

        var port: Int { wirePort.port }

        private func start() async throws {
            let started = try await BlockWireServer.start(
                host: "127.0.0.1", port: 0, tls: try BlockWireServer.tlsContext(settings), serving: serving,
                logger: .init(label: "block-wire-test"))
            server.withLock { $0 = started }
            wirePort.set(started.port)
        }

        /// Closes the listener and its connections, and listens again on a new port.
        func restart() async throws {
            await close()
            try await start()
        }

        func close() async {
            let running = server.withLock { server -> BlockWireServer? in
                defer { server = nil }
                return server
            }
            await running?.close()
        }
    }

    private func withWireOwner(
        _ body: @escaping @Sendable (OwnerHost, RemoteVolumeLink, CallCounter, WireListener) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        try PeerCluster.makeCertificates(in: directory.path)
        let store = try BlockStore(directory: "\(directory.path)/store", options: StoreOptions(backgroundFlatten: false))
        defer { store.close() }
        let volume = try store.createVolume(name: "rwx", size: RemoteIOStreamTests.volumeSize, clusterSize: 65536, multiNode: true)
        _ = try store.addRemoteStager("node-b", toVolume: volume.id)
        let host = OwnerHost(store: store)
        let calls = CallCounter()
        let sessions = RemoteSessions()
        let wirePort = BlockWirePort()
        let wire = try await WireListener(
            certificates: directory.path, serving: BlockWireServing(host: host, sessions: sessions), wirePort: wirePort)
        let service = OwnerService(inner: RemoteVolumeService(host: host, sessions: sessions, wirePort: wirePort), behaviour: .current, calls: calls)
        let transport = InProcessTransport()
        let server = GRPCServer(transport: transport.server, services: [service])
        let client = GRPCClient(transport: transport.client)
        var connector = InProcessConnector(client: client)
        connector.blockWireDialer = BlockWireDialer(tls: try BlockWireDialer.tlsContext(PeerSettings(tlsDirectory: "\(directory.path)/tls")))
        let link = RemoteVolumeLink(
            volumeID: volume.id, nodeID: "node-b", owner: PeerEndpoint(host: "127.0.0.1", port: 9821, nodeID: "node-a"),
            epoch: volume.epoch, size: volume.size, connector: connector)
        let outcome: Result<Void, any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await server.serve() }
            group.addTask { try? await client.runConnections() }
            let outcome: Result<Void, any Error>
            do { outcome = .success(try await body(host, link, calls, wire)) } catch { outcome = .failure(error) }
            link.close()
            await wire.close()
            server.beginGracefulShutdown()
            client.beginGracefulShutdown()
            return outcome
        }
        sessions.closeAll()
        try outcome.get()
    }
}
