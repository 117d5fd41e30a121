/// The StorageClass parameters Strata understands (documented in README.md).
///
/// Unknown keys are refused so that a typo (`clustersize`) fails loudly instead of silently
/// creating a volume with defaults; keys under `csi.storage.k8s.io/` belong to the sidecars
/// (secrets references, PVC metadata) and are ignored.
package struct StorageClassParameters: Equatable {
    package static let clusterSizeKey = "clusterSize"
    package static let reservedPrefix = "csi.storage.k8s.io/"

    /// Bytes per copy-on-write cluster; nil means the store's default (64 KiB).
    package var clusterSize: UInt32?

    package init(_ parameters: [String: String]) throws(CSIError) {
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) where !key.hasPrefix(Self.reservedPrefix) {
            switch key {
            case Self.clusterSizeKey:
                guard let size = UInt32(value), size >= 4096, size <= 1 << 20, size & (size - 1) == 0 else {
                    throw .invalidArgument("parameter clusterSize=\(RequestFields.quoted(value)) must be a power of two from 4096 to 1048576 bytes")
                }
                clusterSize = size
            default:
                throw .invalidArgument("unknown parameter \(RequestFields.quoted(key)); supported: \(Self.clusterSizeKey) (and \(Self.reservedPrefix)* keys, ignored)")
            }
        }
    }

    /// What the store records, and compares on a repeated CreateVolume.
    package var stored: [String: String] {
        clusterSize.map { [Self.clusterSizeKey: String($0)] } ?? [:]
    }
}

/// VolumeSnapshotClass parameters: `replicate` (`all-nodes` copies a new snapshot to every peer
/// in the background, `none` is the default); the sidecars' own keys are ignored, others refused.
package struct SnapshotParameters: Equatable {
    package static let replicateKey = "replicate"

    package enum Replication: String, CaseIterable, Sendable {
        case none
        case allNodes = "all-nodes"
    }

    package var replication: Replication = .none

    package init(_ parameters: [String: String]) throws(CSIError) {
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) where !key.hasPrefix(StorageClassParameters.reservedPrefix) {
            guard key == Self.replicateKey else {
                throw .invalidArgument("unknown snapshot parameter \(RequestFields.quoted(key)); supported: \(Self.replicateKey) (and \(StorageClassParameters.reservedPrefix)* keys, ignored)")
            }
            guard let replication = Replication(rawValue: value) else {
                throw .invalidArgument("parameter replicate=\(RequestFields.quoted(value)) must be all-nodes or none")
            }
            self.replication = replication
        }
    }

    package static func validate(_ parameters: [String: String]) throws(CSIError) {
        _ = try SnapshotParameters(parameters)
    }
}
