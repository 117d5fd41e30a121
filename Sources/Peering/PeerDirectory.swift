#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import PeerProto
import Synchronization

/// One address that may answer the peer protocol; `nodeID` is known for static peers and
/// learned by Identify for addresses a DNS name gave.
struct PeerEndpoint: Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int
    var nodeID: String?

    var description: String {
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return nodeID.map { "\($0) (\(address))" } ?? address
    }
}

/// Opens short-lived mutual-TLS clients to peers.
struct PeerConnector: Sendable {
    let settings: PeerSettings

    /// Unary calls: a peer that does not answer within this is skipped.
    static let unaryTimeout: Duration = .seconds(10)
    /// One layer's stream.
    static let streamTimeout: Duration = .seconds(3600)

    static func options(timeout: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        // A peer that is down fails the call at once, so the next holder is tried.
        options.waitForReady = false
        options.maxResponseMessageBytes = 8 << 20
        return options
    }

    func withClient<Result: Sendable>(
        _ endpoint: PeerEndpoint, _ body: @Sendable (Strata_Peer_V1_Peer.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        let target: any ResolvableTarget
        if IPAddressText.isIPv4(endpoint.host) {
            target = .ipv4(address: endpoint.host, port: endpoint.port)
        } else if endpoint.host.contains(":") {
            target = .ipv6(address: endpoint.host, port: endpoint.port)
        } else {
            target = .dns(host: endpoint.host, port: endpoint.port)
        }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        // Layer chunks are 1 MiB: a wide window keeps a fast link busy.
        config.http2.targetWindowSize = 16 << 20
        config.http2.maxFrameSize = 1 << 20
        config.backoff.initial = .milliseconds(100)
        config.backoff.max = .seconds(1)
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: settings.clientSecurity, config: config)
        return try await withGRPCClient(transport: transport) { client in
            try await body(Strata_Peer_V1_Peer.Client(wrapping: client))
        }
    }
}

/// Where the other nodes are: the static list, plus every address of the DNS names, resolved
/// anew each time (a headless Service over the DaemonSet lists the pods that are ready now).
final class PeerDirectory: Sendable {
    let settings: PeerSettings
    let localNode: String
    let connector: PeerConnector
    private let identities = Mutex<[String: String]>([:])

    init(settings: PeerSettings, localNode: String) {
        self.settings = settings
        self.localNode = localNode
        connector = PeerConnector(settings: settings)
    }

    /// Every peer but this node, static ones first.
    func endpoints() async -> [PeerEndpoint] {
        var result = settings.staticPeers.filter { $0.nodeID != localNode }
            .map { PeerEndpoint(host: $0.address.host, port: $0.address.port, nodeID: $0.nodeID) }
        for name in settings.dnsNames {
            let addresses = await Task.detached { Self.resolve(name.host) }.value
            for address in addresses where !result.contains(where: { $0.host == address && $0.port == name.port }) {
                var endpoint = PeerEndpoint(host: address, port: name.port, nodeID: nil)
                endpoint.nodeID = await identify(endpoint)
                if endpoint.nodeID != localNode { result.append(endpoint) }
            }
        }
        return result
    }

    /// The node answering at `endpoint`, remembered per address; nil when it does not answer.
    func identify(_ endpoint: PeerEndpoint) async -> String? {
        let key = endpoint.description
        if let known = identities.withLock({ $0[key] }) { return known }
        let node = try? await connector.withClient(endpoint) { client in
            try await client.identify(.init(), options: PeerConnector.options(timeout: .seconds(3))).nodeID
        }
        if let node { identities.withLock { $0[key] = node } }
        return node
    }

    /// Every address of `host` (getaddrinfo), numeric.
    static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let current = next {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.pointee.ai_addr, current.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let address = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(address) { addresses.append(address) }
            }
            next = current.pointee.ai_next
        }
        return addresses
    }
}

enum IPAddressText {
    static func isIPv4(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }
}
