import Foundation

/// Store-generated identifiers: a fixed prefix and a lowercase UUID.
/// Every id that comes in is checked against this exact shape before it reaches SQL or a log line.
enum Identifier {
    static let volumePrefix = "vol-"
    static let snapshotPrefix = "snap-"

    static func newVolumeID() -> String { volumePrefix + UUID().uuidString.lowercased() }
    static func newSnapshotID() -> String { snapshotPrefix + UUID().uuidString.lowercased() }

    /// A layer's cluster-wide identity: 32 lowercase hex digits (as the v3 migration backfills).
    static func newLayerUUID() -> String { UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "") }

    static func isLayerUUID(_ id: String) -> Bool {
        id.utf8.count == 32 && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func isVolumeID(_ id: String) -> Bool { matches(id, prefix: volumePrefix) }
    static func isSnapshotID(_ id: String) -> Bool { matches(id, prefix: snapshotPrefix) }

    private static func matches(_ id: String, prefix: String) -> Bool {
        let bytes = Array(id.utf8)
        let prefixBytes = Array(prefix.utf8)
        guard bytes.count == prefixBytes.count + 36, bytes.starts(with: prefixBytes) else { return false }
        for (position, byte) in bytes[prefixBytes.count...].enumerated() {
            if [8, 13, 18, 23].contains(position) {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                let isDigit = byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
                let isLowerHex = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f")
                guard isDigit || isLowerHex else { return false }
            }
        }
        return true
    }
}
