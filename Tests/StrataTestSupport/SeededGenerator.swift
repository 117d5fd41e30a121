/// SplitMix64: a small seeded generator, so randomized tests replay exactly from their seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next `count` bytes: each output word in little-endian order, the last one cut short.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset + 8 <= count {
                buffer.storeBytes(of: next().littleEndian, toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            if offset < count {
                var word = next()
                for index in offset..<count {
                    buffer[index] = UInt8(truncatingIfNeeded: word)
                    word >>= 8
                }
            }
        }
        return bytes
    }
}

/// Deterministic bytes for a seed, different for every seed, neither zero nor compressible: what
/// tests write and expect to read back.
public func pattern(seed: UInt64, count: Int) -> [UInt8] {
    var generator = SeededGenerator(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 1)
    return generator.bytes(count)
}
