import ArgumentParser
import Dispatch
import Foundation
import GRPCCore
import PeerProto
import Peering
import Synchronization

/// `strata-bench remote-io`: the round trip of one small RemoteVolume read over the one pooled
/// peer connection a node keeps to a volume's owner, as a live-migrated VM's I/O pays it. Run it
/// on the remote node's side (another network namespace) against a driver that owns a multi-node
/// volume: it attaches as node `--node`, writes the region it reads, reads `--block` bytes at
/// random aligned offsets at depth 1 and `--depth`, then detaches. Three paths are timed side by
/// side: the blocking link the FUSE worker threads use (`RemoteVolumeLink`) over the block wire
/// (what a driver uses), the same link over the RemoteVolume.Exchange gRPC stream (what it used
/// before, and uses with an owner that serves no wire), and a unary Read on the async gRPC client.
struct RemoteIOBenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remote-io", abstract: "Round trips of small RemoteVolume reads over one pooled mutual-TLS peer connection.")

    @Option(help: "The owner's peer address (HOST:PORT).") var owner: String
    @Option(help: "The owner's node id.") var ownerNode: String
    @Option(help: "The node id this benchmark attaches as.") var node = "bench-remote"
    @Option(help: "Directory with ca.crt, tls.crt and tls.key (the peers' mutual TLS).") var tlsDir: String
    @Option(help: "The multi-node volume to read.") var volume: String
    @Option(help: "Bytes per read.") var block = 4096
    @Option(help: "Bytes written first, then read at random.") var span = 64 << 20
    @Option(help: "Reads timed per case.") var requests = 20000
    @Option(help: "Requests in flight in the deep case.") var depth = 32
    @Flag(help: "Print one JSON object instead of a table.") var json = false

    func run() throws {
        var settings = PeerSettings(tlsDirectory: tlsDir)
        settings.staticPeers = [PeerSettings.StaticPeer(nodeID: ownerNode, address: try NetworkAddress(parsing: owner))]
        let pool = PeerClientPool(settings: settings)
        let directory = PeerDirectory(settings: settings, localNode: node, connector: pool)
        let volumeID = volume
        let link = try Self.wait { try await RemoteVolumeLink.attach(volumeID: volumeID, directory: directory).0 }
        defer {
            link.close()
            try? link.detachWaiting()
            Self.wait { await pool.shutDown() }
        }
        guard UInt64(span) <= link.size, span >= block, block > 0 else { throw BenchError("--span must fit the volume and hold a block") }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        for offset in stride(from: 0, to: span, by: chunk.count) {
            for index in chunk.indices { chunk[index] = UInt8(truncatingIfNeeded: offset >> 20 &+ index) }
            try chunk.withUnsafeBytes { try link.write(UnsafeRawBufferPointer(rebasing: $0[0..<min(chunk.count, span - offset)]), at: UInt64(offset)) }
        }
        try link.flush()

        let blocks = span / block
        let session = Strata_Peer_V1_VolumeSession.with { $0.volumeID = link.volumeID; $0.nodeID = link.nodeID; $0.epoch = link.epoch }
        var streamSettings = settings
        streamSettings.blockWire = false
        let streamPool = PeerClientPool(settings: streamSettings)
        let streamLink = RemoteVolumeLink(
            volumeID: link.volumeID, nodeID: link.nodeID, owner: link.owner, epoch: link.epoch, size: link.size, connector: streamPool)
        defer {
            streamLink.close()
            Self.wait { await streamPool.shutDown() }
        }
        let report = Report()
        report.section("\(block)-byte reads over one pooled mutual-TLS connection to \(ownerNode) (\(requests) per case)")
        _ = try linkReads(link, blocks: blocks, count: min(requests, 2000), depth: 1)  // warm-up
        _ = try linkReads(streamLink, blocks: blocks, count: min(requests, 2000), depth: 1)
        for (label, key, samples) in [
            ("RemoteVolumeLink over the block wire, depth 1", "wire_d1", try linkReads(link, blocks: blocks, count: requests, depth: 1)),
            ("RemoteVolumeLink over the Exchange stream, depth 1", "link_d1", try linkReads(streamLink, blocks: blocks, count: requests, depth: 1)),
            ("RemoteVolumeLink over the block wire, depth \(depth)", "wire_d\(depth)",
             try linkReads(link, blocks: blocks, count: requests, depth: depth)),
            ("RemoteVolumeLink over the Exchange stream, depth \(depth)", "link_d\(depth)",
             try linkReads(streamLink, blocks: blocks, count: requests, depth: depth)),
            ("unary Read, async client, depth 1", "client_d1", try clientReads(pool, owner: link.owner, session: session, blocks: blocks, count: requests)),
        ] {
            report.add(key + "_p50_us", percentile(samples.latencies, 0.5) * 1e6, "µs", label + ", p50")
            report.add(key + "_p99_us", percentile(samples.latencies, 0.99) * 1e6, "µs", label + ", p99")
            report.add(key + "_per_second", Double(samples.latencies.count) / samples.seconds, "reads/s", label + ", rate")
        }
        print(json ? try report.json(extra: ["block_bytes": block, "depth": depth]) : report.table())
    }

    private struct Samples {
        var latencies: [Double]
        var seconds: Double
    }

    /// `count` reads through the blocking link from `depth` threads, each waiting for its own.
    private func linkReads(_ link: RemoteVolumeLink, blocks: Int, count: Int, depth: Int) throws -> Samples {
        let block = self.block
        let perThread = max(count / depth, 1)
        let results = Mutex<[Double]>([])
        let failure = Mutex<(any Error)?>(nil)
        let group = DispatchGroup()
        let started = now()
        for thread in 0..<depth {
            group.enter()
            let worker = Thread {
                defer { group.leave() }
                var generator = SplitMix(state: UInt64(thread + 1))
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: block, alignment: 4096)
                defer { buffer.deallocate() }
                var latencies: [Double] = []
                latencies.reserveCapacity(perThread)
                do {
                    for _ in 0..<perThread {
                        let offset = UInt64(Int(generator.next() % UInt64(blocks)) * block)
                        let start = now()
                        try link.read(into: buffer, at: offset)
                        latencies.append(now() - start)
                    }
                } catch {
                    failure.withLock { $0 = error }
                }
                results.withLock { $0 += latencies }
            }
            worker.start()
        }
        group.wait()
        let seconds = now() - started
        if let error = failure.withLock({ $0 }) { throw error }
        return Samples(latencies: results.withLock { $0 }, seconds: seconds)
    }

    /// `count` reads one after another on the async client, without the blocking bridge.
    private func clientReads(
        _ pool: PeerClientPool, owner: PeerEndpoint, session: Strata_Peer_V1_VolumeSession, blocks: Int, count: Int
    ) throws -> Samples {
        let block = self.block
        return try Self.wait {
            try await pool.withRemoteVolumeClient(owner) { client in
                var generator = SplitMix(state: 99)
                var latencies: [Double] = []
                latencies.reserveCapacity(count)
                let options = PeerClientPool.options(timeout: .seconds(10))
                let started = now()
                for _ in 0..<count {
                    let request = Strata_Peer_V1_ReadRequest.with {
                        $0.session = session
                        $0.offset = UInt64(Int(generator.next() % UInt64(blocks)) * block)
                        $0.length = UInt32(block)
                    }
                    let start = now()
                    let answer = try await client.read(request, options: options)
                    latencies.append(now() - start)
                    guard answer.data.count == block else { throw BenchError("a read answered \(answer.data.count) bytes") }
                }
                return Samples(latencies: latencies, seconds: now() - started)
            }
        }
    }

    /// Runs `body` on a Swift task and waits for it on this thread.
    private static func wait<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) throws -> Value {
        try WaitingThread.run(body).get()
    }

    private static func wait(_ body: @escaping @Sendable () async -> Void) {
        _ = try? wait { () async throws -> Int in
            await body()
            return 0
        }
    }
}
