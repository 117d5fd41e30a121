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

/// Snapshot classes have no Strata parameters; only the sidecars' own keys are accepted.
package enum SnapshotParameters {
    package static func validate(_ parameters: [String: String]) throws(CSIError) {
        if let key = parameters.keys.sorted().first(where: { !$0.hasPrefix(StorageClassParameters.reservedPrefix) }) {
            throw .invalidArgument("unknown snapshot parameter \(RequestFields.quoted(key)); Strata snapshots take none")
        }
    }
}
