import Logging

/// Tunables of a store; the defaults suit a CSI node.
public struct StoreOptions: Sendable {
    /// Cluster size of new volumes that do not name one (a power of two, 4 KiB–1 MiB).
    public var defaultClusterSize: UInt32 = 65536
    /// Past this chain depth a volume is flattened in the background.
    public var softChainDepthLimit: Int = 32
    /// Operations that would make a chain deeper than this fail with `.chainDepthLimit`.
    public var hardChainDepthLimit: Int = 128
    /// Whether crossing the soft limit starts a background flatten (benchmarks and tests turn it off).
    public var backgroundFlatten: Bool = true
    /// Space kept allocated so that deletions can still commit on a full disk (0: none).
    public var spaceReserveBytes: Int = 8 << 20
    public var logger: Logger

    public init(
        defaultClusterSize: UInt32 = 65536,
        softChainDepthLimit: Int = 32,
        hardChainDepthLimit: Int = 128,
        backgroundFlatten: Bool = true,
        spaceReserveBytes: Int = 8 << 20,
        logger: Logger = Logger(label: "strata.blockstore")
    ) {
        self.defaultClusterSize = defaultClusterSize
        self.softChainDepthLimit = softChainDepthLimit
        self.hardChainDepthLimit = hardChainDepthLimit
        self.backgroundFlatten = backgroundFlatten
        self.spaceReserveBytes = spaceReserveBytes
        self.logger = logger
    }
}
