import Foundation

/// How this driver reaches the drivers of other nodes (`--peer-*` flags). Without it the driver
/// serves only what its own store holds, as before peers existed.
public struct PeerSettings: Sendable {
    /// A peer at a fixed address (`--peer NODE=HOST:PORT`).
    public struct StaticPeer: Sendable, Equatable {
        public var nodeID: String
        public var address: NetworkAddress

        public init(nodeID: String, address: NetworkAddress) {
            self.nodeID = nodeID
            self.address = address
        }

        public init(parsing text: String) throws(ConfigurationError) {
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw ConfigurationError("\"\(text)\" is not NODE=HOST:PORT")
            }
            let address = try NetworkAddress(parsing: String(text[text.index(after: equals)...]))
            guard address.host != "0.0.0.0" else { throw ConfigurationError("\"\(text)\" names no host") }
            self.init(nodeID: String(text[..<equals]), address: address)
        }
    }

    /// Where to serve the peer protocol; nil: fetch from peers but serve none.
    public var listenAddress: NetworkAddress?
    public var staticPeers: [StaticPeer] = []
    /// DNS names resolved (every address) each time holders are looked for (`--peer-dns NAME:PORT`).
    public var dnsNames: [NetworkAddress] = []
    /// Holds `ca.crt`, `tls.crt` and `tls.key` (PEM): every certificate of that CA is a member.
    public var tlsDirectory: String
    /// Layer transfers this node serves at once; more wait for a free slot.
    public var maxConcurrentSends = 3
    /// Caps each transfer this node serves (bytes per second), so copies do not starve the
    /// node's other traffic; nil: no cap.
    public var sendBytesPerSecond: Int?
    /// The block wire's port (`--peer-wire-port`): nil, the peer port + 1 (any free port when
    /// the peer port is 0). It serves remote block I/O beside the gRPC port, same certificates.
    public var wirePort: Int?
    /// Whether this node serves the block wire and uses its peers' (`--peer-wire-port off`: no;
    /// block I/O then travels over RemoteVolume.Exchange).
    public var blockWire = true
    /// How often replicas held here are checked against their origin (deleted there: dropped here).
    public var replicaCheckInterval: Duration = .seconds(60)

    public init(tlsDirectory: String) {
        self.tlsDirectory = tlsDirectory
    }

    /// Where the block wire listens, when it does.
    var wireListenPort: Int? {
        guard blockWire, let listen = listenAddress else { return nil }
        if let wirePort { return wirePort }
        return listen.port == 0 ? 0 : listen.port + 1
    }

    var caPath: String { (tlsDirectory as NSString).appendingPathComponent("ca.crt") }
    var certificatePath: String { (tlsDirectory as NSString).appendingPathComponent("tls.crt") }
    var keyPath: String { (tlsDirectory as NSString).appendingPathComponent("tls.key") }

    /// Refuses to start with a TLS directory that lacks one of its files.
    public func validate() throws(ConfigurationError) {
        for path in [caPath, certificatePath, keyPath] where !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigurationError("peer TLS file \(path) is missing or unreadable (--peer-tls-dir needs ca.crt, tls.crt and tls.key)")
        }
        if let wirePort, !(0...65535).contains(wirePort) { throw ConfigurationError("--peer-wire-port must be 0 to 65535, or off") }
        if blockWire, wirePort == nil, listenAddress?.port == 65535 {
            throw ConfigurationError("the block wire listens on the peer port + 1 by default, and the peer port is 65535: give --peer-wire-port (or off)")
        }
        guard (1...64).contains(maxConcurrentSends) else { throw ConfigurationError("--peer-max-sends must be 1 to 64") }
    }
}
