import Glibc
@testable import BlockStore

/// Checks shared by the model-based and crash tests: listed extents start and end on multiples
/// of the granularity (at least 4 KiB) or at the end of the volume, so a 4 KiB block is covered
/// whole or not at all, and comparing blocks with memcmp finds every byte that must be listed.
enum ListingChecks {
    /// The first 4 KiB block (by offset) that differs between `target` and `base` (zero-padded;
    /// nil: compare with zeros) and is not covered by `extents`.
    static func uncoveredDifference(_ extents: [Extent], target: [UInt8], base: [UInt8]?) -> Int? {
        let block = 4096
        var index = 0
        return target.withUnsafeBytes { target -> Int? in
            let zeros = [UInt8](repeating: 0, count: block)
            return zeros.withUnsafeBytes { zeros -> Int? in
                (base ?? []).withUnsafeBytes { base -> Int? in
                    var offset = 0
                    while offset < target.count {
                        let length = min(block, target.count - offset)
                        let shared = base.count > offset ? min(length, base.count - offset) : 0
                        var differs = shared > 0 && memcmp(target.baseAddress! + offset, base.baseAddress! + offset, shared) != 0
                        if !differs && length > shared {
                            differs = memcmp(target.baseAddress! + offset + shared, zeros.baseAddress!, length - shared) != 0
                        }
                        if differs {
                            while index < extents.count && extents[index].end <= UInt64(offset) { index += 1 }
                            guard index < extents.count, extents[index].offset <= UInt64(offset) else { return offset }
                        }
                        offset += block
                    }
                    return nil
                }
            }
        }
    }
}
