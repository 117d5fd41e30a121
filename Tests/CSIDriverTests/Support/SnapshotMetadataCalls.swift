#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// One SnapshotMetadata stream, read whole: what every message said.
struct MetadataStream: Equatable {
    var types: Set<Csi_V1_BlockMetadataType> = []
    var capacities: Set<Int64> = []
    var messageSizes: [Int] = []
    var extents: [ClosedExtent] = []
}

/// An extent as the wire gives it.
struct ClosedExtent: Hashable, CustomStringConvertible {
    var offset: Int64
    var length: Int64
    var end: Int64 { offset + length }
    var description: String { "\(offset)+\(length)" }
}

extension InProcessDriver {
    func allocated(_ snapshotID: String, from offset: Int64 = 0, maxResults: Int32 = 0) async throws -> MetadataStream {
        let request = Csi_V1_GetMetadataAllocatedRequest.with {
            $0.snapshotID = snapshotID
            $0.startingOffset = offset
            $0.maxResults = maxResults
            $0.secrets = ["token": "allocated-secret-value"]
        }
        return try await snapshotMetadata.getMetadataAllocated(request: ClientRequest(message: request)) { response in
            var stream = MetadataStream()
            for try await message in response.messages {
                stream.types.insert(message.blockMetadataType)
                stream.capacities.insert(message.volumeCapacityBytes)
                stream.messageSizes.append(message.blockMetadata.count)
                stream.extents += message.blockMetadata.map { ClosedExtent(offset: $0.byteOffset, length: $0.sizeBytes) }
            }
            return stream
        }
    }

    func delta(from base: String, to target: String, from offset: Int64 = 0, maxResults: Int32 = 0) async throws -> MetadataStream {
        let request = Csi_V1_GetMetadataDeltaRequest.with {
            $0.baseSnapshotID = base
            $0.targetSnapshotID = target
            $0.startingOffset = offset
            $0.maxResults = maxResults
            $0.secrets = ["token": "delta-secret-value"]
        }
        return try await snapshotMetadata.getMetadataDelta(request: ClientRequest(message: request)) { response in
            var stream = MetadataStream()
            for try await message in response.messages {
                stream.types.insert(message.blockMetadataType)
                stream.capacities.insert(message.volumeCapacityBytes)
                stream.messageSizes.append(message.blockMetadata.count)
                stream.extents += message.blockMetadata.map { ClosedExtent(offset: $0.byteOffset, length: $0.sizeBytes) }
            }
            return stream
        }
    }
}

/// Maximal runs of `block`-sized blocks for which `differs` holds.
func runs(blocks count: Int, block: Int, _ differs: (Int) -> Bool) -> [ClosedExtent] {
    var result: [ClosedExtent] = []
    for index in 0..<count where differs(index) {
        let offset = Int64(index * block)
        if let last = result.last, last.end == offset {
            result[result.count - 1].length += Int64(block)
        } else {
            result.append(ClosedExtent(offset: offset, length: Int64(block)))
        }
    }
    return result
}

/// Discards a range of a block device (BLKDISCARD), as a filesystem's trim would.
func discardRange(of path: String, at offset: UInt64, length: UInt64) throws {
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    defer { close(fd) }
    var range: (UInt64, UInt64) = (offset, length)
    let blkdiscard: UInt = 0x1277  // _IO(0x12, 119)
    guard ioctl(fd, blkdiscard, &range) == 0, fsync(fd) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
}
