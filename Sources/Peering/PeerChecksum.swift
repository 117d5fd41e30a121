import Crypto
import Foundation
import PeerProto

/// The checksums of the layer stream: each chunk's SHA-256 covers its extents (offset, length,
/// zero flag, little-endian) and then its bytes, so a chunk whose data moved to another offset
/// fails too; the layer's covers every chunk's digest in order, so a dropped, repeated or
/// reordered chunk fails at the end.
enum PeerChecksum {
    static func chunkDigest(extents: [Strata_Peer_V1_Extent], data: Data) -> Data {
        var hasher = SHA256()
        for extent in extents {
            withUnsafeBytes(of: extent.offset.littleEndian) { hasher.update(bufferPointer: $0) }
            withUnsafeBytes(of: extent.length.littleEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: Data([extent.zero ? 1 : 0]))
        }
        hasher.update(data: data)
        return Data(hasher.finalize())
    }

    /// Accumulates chunk digests into the layer digest.
    struct LayerDigest {
        private var hasher = SHA256()

        mutating func add(chunkDigest: Data) { hasher.update(data: chunkDigest) }

        func finalize() -> Data { Data(hasher.finalize()) }
    }
}
