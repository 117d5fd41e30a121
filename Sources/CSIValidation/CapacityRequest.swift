import CSIProto

/// A CSI capacity_range resolved to the byte size Strata will give a volume.
package struct CapacityRequest {
    /// Volumes are whole pages, so block devices and filesystems see aligned sizes.
    package static let granularity: UInt64 = 4096
    /// Used when the CO asks for no particular size.
    package static let defaultSize: UInt64 = 1 << 30

    package let requiredBytes: UInt64
    /// Zero means no limit.
    package let limitBytes: UInt64

    package init(_ range: Csi_V1_CapacityRange?) throws(CSIError) {
        let required = range?.requiredBytes ?? 0
        let limit = range?.limitBytes ?? 0
        guard required >= 0 else { throw .invalidArgument("capacity_range.required_bytes must not be negative") }
        guard limit >= 0 else { throw .invalidArgument("capacity_range.limit_bytes must not be negative") }
        guard limit == 0 || required <= limit else {
            throw .invalidArgument("capacity_range.limit_bytes (\(limit)) is below required_bytes (\(required))")
        }
        requiredBytes = UInt64(required)
        limitBytes = UInt64(limit)
    }

    /// The size of a new volume: at least what was required and at least the source's size (a
    /// clone is never smaller than what it copies), page-aligned, and within the limit.
    package func sizeForNewVolume(sourceSize: UInt64?) throws(CSIError) -> UInt64 {
        var size = requiredBytes > 0 ? requiredBytes : (sourceSize ?? Self.defaultSize)
        // Only a limit: the largest whole-page size within it (rounding the limit up would exceed it).
        if requiredBytes == 0, sourceSize == nil, limitBytes > 0 {
            size = min(size, max(limitBytes / Self.granularity * Self.granularity, Self.granularity))
        }
        size = Self.roundedUp(max(size, sourceSize ?? 0))
        try checkLimit(size, sourceSize: sourceSize)
        return size
    }

    /// The size after ControllerExpandVolume/NodeExpandVolume: never smaller than now.
    package func sizeAfterExpanding(from current: UInt64) throws(CSIError) -> UInt64 {
        let size = max(Self.roundedUp(requiredBytes), current)
        guard limitBytes == 0 || size <= limitBytes else {
            throw .outOfRange(size == current
                ? "volume is already \(current) bytes, above limit_bytes \(limitBytes); volumes never shrink"
                : "limit_bytes \(limitBytes) is below the page-aligned size \(size)")
        }
        return size
    }

    /// OUT_OF_RANGE when no page-aligned size lies in the range at all, whatever the volume.
    package func requireAlignedSizeInRange() throws(CSIError) {
        let smallest = Self.roundedUp(requiredBytes)
        guard limitBytes > 0, smallest > limitBytes else { return }
        throw .outOfRange("no size satisfies the range: sizes are multiples of \(Self.granularity) bytes and \(smallest) exceeds limit_bytes \(limitBytes)")
    }

    private func checkLimit(_ size: UInt64, sourceSize: UInt64?) throws(CSIError) {
        guard limitBytes > 0, size > limitBytes else { return }
        if let sourceSize, sourceSize > limitBytes {
            throw .outOfRange("the source is \(sourceSize) bytes, more than limit_bytes \(limitBytes): a clone cannot be smaller than its source")
        }
        throw .outOfRange("no size satisfies the range: sizes are multiples of \(Self.granularity) bytes and \(size) exceeds limit_bytes \(limitBytes)")
    }

    package static func roundedUp(_ bytes: UInt64) -> UInt64 {
        (bytes + granularity - 1) / granularity * granularity
    }
}
