#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import KernelFiles
import NodeHost
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRPCCore
import GRPCNIOTransportHTTP2
import StrataTestSupport
import Synchronization
import Testing

/// Several nodes on one machine: a network namespace per node, joined by veth pairs to a bridge
/// in a hub namespace; the test itself reaches them through one more veth from the host
/// (addresses from 198.18.0.0/15 only). Each node runs the real strata-csi under
/// `nsenter --net` (so its FUSE and loop mounts are visible to the test), with its own state
/// directory, node id, kubelet directory and Unix socket on the host.
final class PeerCluster: @unchecked Sendable {
    let directory: TemporaryDirectory
    let tag: String
    let subnet: Int
    let names: [String]
    private(set) var nodes: [String: ClusterNode] = [:]
    static let peerPort = 9821
    static let metricsPort = 9820

    var hub: String { "stp\(tag)h" }
    func namespace(_ node: String) -> String { "stp\(tag)\(node)" }
    func address(_ node: String) -> String { "198.18.\(subnet).\(names.firstIndex(of: node)! + 1)" }
    var tlsDirectory: String { directory.path + "/tls" }

    /// Makes the namespaces and the certificates (a cluster CA and a node certificate, a foreign
    /// CA and a certificate of it for the negative cases).
    init(nodes names: [String]) throws {
        directory = try TemporaryDirectory()
        (tag, subnet) = try Self.allocateNetwork()
        self.names = names
        do {
            try setUpNetwork()
            try Self.makeCertificates(in: directory.path)
        } catch {
            tearDownNetwork()
            throw error
        }
    }

    /// Clusters of one test process run side by side: each gets its own names and /24, and a
    /// /24 some other process put on the host already is skipped.
    private static let allocations = Mutex<Int>(Int.random(in: 0..<250))

    private struct NoFreeSubnet: Error, CustomStringConvertible {
        var description: String { "no free /24 in 198.18.0.0/16 for a test cluster" }
    }

    private static func allocateNetwork() throws -> (tag: String, subnet: Int) {
        let used = (try? ExternalTool.run("ip", "-o", "addr", "show")) ?? ""
        for _ in 0..<250 {
            let number = allocations.withLock { value -> Int in
                defer { value += 1 }
                return value
            }
            let subnet = number % 250 + 1
            guard !used.contains("198.18.\(subnet).") else { continue }
            return (String(format: "%04x", (Int(getpid()) &* 31 &+ number) & 0xFFFF), subnet)
        }
        throw NoFreeSubnet()
    }

    private func setUpNetwork() throws {
        try ExternalTool.run("ip", "netns", "add", hub)
        try ExternalTool.run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        try ExternalTool.run("ip", "-n", hub, "link", "set", "br0", "up")
        for (index, node) in names.enumerated() {
            let inside = "s\(tag)\(index)n", outside = "s\(tag)\(index)b"
            try ExternalTool.run("ip", "netns", "add", namespace(node))
            try ExternalTool.run("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            try ExternalTool.run("ip", "link", "set", inside, "netns", namespace(node))
            try ExternalTool.run("ip", "link", "set", outside, "netns", hub)
            try ExternalTool.run("ip", "-n", namespace(node), "addr", "add", "\(address(node))/24", "dev", inside)
            try ExternalTool.run("ip", "-n", namespace(node), "link", "set", inside, "up")
            try ExternalTool.run("ip", "-n", namespace(node), "link", "set", "lo", "up")
            try ExternalTool.run("ip", "-n", hub, "link", "set", outside, "master", "br0")
            try ExternalTool.run("ip", "-n", hub, "link", "set", outside, "up")
        }
        // The test's own way in: a veth from the host to the bridge.
        let host = "s\(tag)hh", hubSide = "s\(tag)hb"
        try ExternalTool.run("ip", "link", "add", host, "type", "veth", "peer", "name", hubSide)
        try ExternalTool.run("ip", "link", "set", hubSide, "netns", hub)
        try ExternalTool.run("ip", "-n", hub, "link", "set", hubSide, "master", "br0")
        try ExternalTool.run("ip", "-n", hub, "link", "set", hubSide, "up")
        try ExternalTool.run("ip", "addr", "add", "198.18.\(subnet).254/24", "dev", host)
        try ExternalTool.run("ip", "link", "set", host, "up")
    }

    private func tearDownNetwork() {
        _ = try? ExternalTool.run("ip", "link", "del", "s\(tag)hh")
        for node in names { _ = try? ExternalTool.run("ip", "netns", "del", namespace(node)) }
        _ = try? ExternalTool.run("ip", "netns", "del", hub)
    }

    static func makeCertificates(in base: String) throws {
        let fileManager = FileManager.default
        for folder in ["tls", "foreign", "ca"] { try fileManager.createDirectory(atPath: "\(base)/\(folder)", withIntermediateDirectories: true) }
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let leafExtensions = "\(base)/ca/leaf.ext"
        try "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:strata-node\n".write(toFile: leafExtensions, atomically: true, encoding: .utf8)
        for (folder, caName) in [("tls", "strata-test-ca"), ("foreign", "someone-else-ca")] {
            let dir = "\(base)/\(folder)"
            try ExternalTool.run("openssl", ["req", "-x509"] + curve + ["-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.crt", "-days", "2", "-subj", "/CN=\(caName)"])
            try ExternalTool.run("openssl", ["req"] + curve + ["-keyout", "\(dir)/tls.key", "-out", "\(dir)/tls.csr", "-subj", "/CN=strata-node"])
            try ExternalTool.run("openssl", "x509", "-req", "-in", "\(dir)/tls.csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
                          "-CAcreateserial", "-out", "\(dir)/tls.crt", "-days", "2", "-extfile", leafExtensions)
        }
    }

    /// Starts (or restarts) a node's driver and waits until it serves.
    @discardableResult
    func start(_ node: String, extra: [String] = [], staticPeers: Bool = true) throws -> ClusterNode {
        let peers = staticPeers ? names.filter { $0 != node }.flatMap { ["--peer", "node-\($0)=\(address($0)):\(Self.peerPort)"] } : []
        let process = try ClusterNode(
            name: node, cluster: self,
            arguments: ["--peer-listen", "\(address(node)):\(Self.peerPort)", "--peer-tls-dir", tlsDirectory,
                        "--metrics-address", "\(address(node)):\(Self.metricsPort)"] + peers + extra)
        nodes[node] = process
        try process.waitUntilServing()
        return process
    }

    subscript(node: String) -> ClusterNode { nodes[node]! }

    /// Cuts `node` off the network (its port on the bridge down), or joins it again: its driver
    /// keeps running, its peers' packets to it are dropped.
    func setLink(_ node: String, up: Bool) throws {
        let index = names.firstIndex(of: node)!
        try ExternalTool.run("ip", "-n", hub, "link", "set", "s\(tag)\(index)b", up ? "up" : "down")
    }

    /// The last notices, warnings and errors of each node's log (every run of its driver), for a failure's
    /// message.
    func complaints(last count: Int = 12) -> String {
        nodes.keys.sorted().map { name in
            let lines = nodes[name]!.log.split(separator: "\n").filter { $0.contains(" notice ") || $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }
            return "node \(name):\n" + lines.suffix(count).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Stops every driver, removes what they staged, and the namespaces.
    func tearDown() {
        NodeLeftovers.clear(under: directory.path) {
            for node in nodes.values { node.stop() }
        }
        tearDownNetwork()
    }
}

/// One node's driver process.
final class ClusterNode: @unchecked Sendable {
    let name: String
    let nodeID: String
    let socketPath: String
    let stateDirectory: String
    let kubelet: String
    let address: String
    let logPath: String
    private let process = Process()
    /// Set when a killed driver was not reaped in time: later stops do not wait for it again.
    private let abandoned = Atomic<Bool>(false)
    /// Where this run's lines start in the log, which a restart appends to.
    private var logStart = 0

    init(name: String, cluster: PeerCluster, arguments: [String]) throws {
        self.name = name
        nodeID = "node-\(name)"
        let base = cluster.directory.path + "/" + name
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        socketPath = base + "/csi.sock"
        stateDirectory = base + "/state"
        kubelet = base + "/kubelet"
        address = cluster.address(name)
        logPath = base + "/driver.log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = ["--net=/run/netns/\(cluster.namespace(name))", DriverProcess.binaryPath,
                             "--endpoint", "unix://\(socketPath)", "--state-dir", stateDirectory, "--nodeid", nodeID,
                             "--kubelet-dir", kubelet, "--grace-period", "2", "--peer-check-interval", "2"] + arguments
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        logStart = Int(log.seekToEndOfFile())
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    func waitUntilServing(timeout: Duration = .seconds(60)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !process.isRunning { throw DriverProcessError.exited(status: process.terminationStatus, log: log) }
            let current = String(log.utf8.dropFirst(logStart)) ?? ""
            if DriverProcess.socketAcceptsConnections(socketPath), current.contains("strata-csi listening"), current.contains("serving the peer protocol") {
                return
            }
            usleep(20_000)
        }
        throw DriverProcessError.notListening(log: log)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    func kill() {
        guard process.isRunning, !abandoned.load(ordering: .relaxed) else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        // Bounded: one whole run hung here for 8 minutes on a driver that had crashed and stayed
        // a zombie Foundation's Process never reaped. A test fails with the log instead.
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
        guard process.isRunning else { return }
        abandoned.store(true, ordering: .relaxed)
        let state = ((try? KernelFile.read("/proc/\(process.processIdentifier)/stat")) ?? nil).flatMap { $0.split(separator: " ").dropFirst(2).first.map(String.init) } ?? "?"
        Issue.record("the driver of node \(name) (pid \(process.processIdentifier), state \(state)) was not reaped 30 s after SIGKILL; its log ends:\n\(log.suffix(6000))")
    }

    func stop() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(20)
        while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
        kill()
    }

    deinit { stop() }

    func withClient<Result: Sendable>(_ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result) async throws -> Result {
        try await withGRPCClient(
            transport: .http2NIOPosix(target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext), handleClient: body)
    }

    func controller<Result: Sendable>(_ body: @Sendable (Csi_V1_Controller.Client<HTTP2ClientTransport.Posix>) async throws -> Result)
        async throws -> Result
    {
        try await withClient { try await body(Csi_V1_Controller.Client(wrapping: $0)) }
    }

    /// One sample of a metric family (labels as written in the exposition, e.g. `result="ok"`); 0 when absent.
    func metric(_ name: String, labels: String? = nil) async throws -> Double {
        let url = URL(string: "http://\(address):\(PeerCluster.metricsPort)/metrics")!
        let (data, _) = try await URLSession.shared.data(from: url)
        let text = String(decoding: data, as: UTF8.self)
        let key = labels.map { "\(name){\($0)}" } ?? name
        for line in text.split(separator: "\n") where line.hasPrefix(key + " ") {
            return Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return 0
    }

    /// Layer files in this node's store.
    var layerFileCount: Int { layerFiles.count }

    /// The store's layer files, by name.
    var layerFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/store/layers")) ?? []).filter { $0.hasPrefix("layer-") }.sorted()
    }

    // MARK: Block volumes as kubelet stages them

    func stagingPath(_ volumeID: String) -> String { "\(kubelet)/plugins/kubernetes.io/csi/strata.csi.dev/\(volumeID)/globalmount" }
    func devicePath(_ volumeID: String) -> String { "\(kubelet)/pods/pod-\(volumeID.suffix(8))/volumes/kubernetes.io~csi/\(volumeID)/dev" }

    /// Stages and publishes a block volume; returns the device path in the pod.
    func attach(_ volumeID: String, capability: Csi_V1_VolumeCapability = Requests.blockCapability) async throws -> String {
        try await Self.retryingAborted { try await self.attachOnce(volumeID, capability: capability) }
    }

    private func attachOnce(_ volumeID: String, capability: Csi_V1_VolumeCapability) async throws -> String {
        let staging = stagingPath(volumeID), target = devicePath(volumeID)
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try await withClient { client in
            let node = Csi_V1_Node.Client(wrapping: client)
            _ = try await node.nodeStageVolume(.with {
                $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.volumeCapability = capability
            })
            _ = try await node.nodePublishVolume(.with {
                $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.targetPath = target; $0.volumeCapability = capability
            })
        }
        return target
    }

    func detach(_ volumeID: String) async throws {
        try await Self.retryingAborted { try await self.detachOnce(volumeID) }
    }

    /// ABORTED means another operation on the volume is running (the driver's per-volume lock,
    /// as the CSI spec asks): kubelet retries, and so do the tests.
    static func retryingAborted<Result>(_ body: () async throws -> Result) async throws -> Result {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch let error as RPCError where error.code == .aborted && attempt < 50 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    private func detachOnce(_ volumeID: String) async throws {
        try await withClient { client in
            let node = Csi_V1_Node.Client(wrapping: client)
            _ = try await node.nodeUnpublishVolume(.with { $0.volumeID = volumeID; $0.targetPath = devicePath(volumeID) })
            _ = try await node.nodeUnstageVolume(.with { $0.volumeID = volumeID; $0.stagingTargetPath = stagingPath(volumeID) })
        }
    }
}
