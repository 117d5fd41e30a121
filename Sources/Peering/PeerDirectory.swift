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
public struct PeerEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// Where to connect: what the connection pool keys its clients by.
    public struct Address: Sendable, Hashable {
        public var host: String
        public var port: Int
    }

    public var host: String
    public var port: Int
    public var nodeID: String?

    public init(host: String, port: Int, nodeID: String?) {
        self.host = host
        self.port = port
        self.nodeID = nodeID
    }

    public var address: Address { Address(host: host, port: port) }

    public var description: String {
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return nodeID.map { "\($0) (\(address))" } ?? address
    }
}

/// Where the other nodes are: the static list, plus every address of the DNS names, resolved
/// anew each time (a headless Service over the DaemonSet lists the pods that are ready now).
public final class PeerDirectory: Sendable {
    let settings: PeerSettings
    public let localNode: String
    public let connector: any PeerConnecting
    private let identities = Mutex<[String: String]>([:])

    public init(settings: PeerSettings, localNode: String, connector: any PeerConnecting) {
        self.settings = settings
        self.localNode = localNode
        self.connector = connector
    }

    /// Every peer but this node, static ones first.
    public func endpoints() async -> [PeerEndpoint] {
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
            try await client.identify(.init(), options: PeerClientPool.options(timeout: .seconds(3))).nodeID
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
