import BlockStore
import CSIProto
import CSIValidation
import GRPCCore
import Peering

/// CSI SnapshotMetadata (changed-block tracking): the allocated extents of a snapshot and the
/// extents changed between two snapshots of one chain, streamed.
///
/// Extents are VARIABLE_LENGTH runs: the store knows changes per cluster, and per 4 KiB subcluster
/// where a write copied up part of an inherited cluster, so runs say the same in far fewer
/// entries than fixed blocks would (100 MiB changed in one place is one extent, not 1,600), and a
/// client never has to guess a block size. Every extent starts and ends on a multiple of the
/// volume's subcluster size (or at the end of the volume); `starting_offset` is rounded down to
/// that multiple and an extent that spans it is cut there, so a call resumed from the end of the
/// last extent it received continues exactly where the interrupted one stopped.
struct SnapshotMetadataService: Csi_V1_SnapshotMetadata.SimpleServiceProtocol {
    let context: DriverContext

    /// Extents per message when the caller leaves `max_results` at 0 (about 16 KiB on the wire).
    static let defaultMaxResults = 1024

    func getMetadataAllocated(
        request: Csi_V1_GetMetadataAllocatedRequest, response: RPCWriter<Csi_V1_GetMetadataAllocatedResponse>,
        context _: ServerContext
    ) async throws {
        try RequestFields.requireID(request.snapshotID, field: "snapshot_id")
        let window = try Self.window(startingOffset: request.startingOffset, maxResults: request.maxResults)
        let store = try context.store()
        let listing = try await BlockingWork.run { try store.allocatedExtents(ofSnapshot: request.snapshotID) }
        for batch in try Self.batches(of: listing, window) {
            try await response.write(.with {
                $0.blockMetadataType = .variableLength
                $0.volumeCapacityBytes = Int64(listing.volumeSize)
                $0.blockMetadata = batch
            })
        }
    }

    func getMetadataDelta(
        request: Csi_V1_GetMetadataDeltaRequest, response: RPCWriter<Csi_V1_GetMetadataDeltaResponse>,
        context _: ServerContext
    ) async throws {
        try RequestFields.requireID(request.baseSnapshotID, field: "base_snapshot_id")
        try RequestFields.requireID(request.targetSnapshotID, field: "target_snapshot_id")
        let window = try Self.window(startingOffset: request.startingOffset, maxResults: request.maxResults)
        let store = try context.store()
        let listing = try await BlockingWork.run {
            try store.changedExtents(from: request.baseSnapshotID, to: request.targetSnapshotID)
        }
        for batch in try Self.batches(of: listing, window) {
            try await response.write(.with {
                $0.blockMetadataType = .variableLength
                $0.volumeCapacityBytes = Int64(listing.volumeSize)
                $0.blockMetadata = batch
            })
        }
    }

    /// Where to start and how many extents per message, checked before the store is asked.
    struct Window {
        var startingOffset: UInt64
        var maxResults: Int
    }

    static func window(startingOffset: Int64, maxResults: Int32) throws(CSIError) -> Window {
        guard startingOffset >= 0 else { throw .invalidArgument("starting_offset must not be negative") }
        try RequestFields.requireNonNegative(maxResults, field: "max_results")
        return Window(startingOffset: UInt64(startingOffset), maxResults: maxResults == 0 ? defaultMaxResults : Int(maxResults))
    }

    /// The listing from the window's offset on, in messages of at most `maxResults` extents; one
    /// empty message when nothing is listed, so the caller still learns the type and capacity.
    static func batches(of listing: ExtentListing, _ window: Window) throws(CSIError) -> [[Csi_V1_BlockMetadata]] {
        guard window.startingOffset < listing.volumeSize else {
            throw .outOfRange("starting_offset \(window.startingOffset) is not below the volume size \(listing.volumeSize)")
        }
        let start = window.startingOffset / listing.granularity * listing.granularity
        var remaining = listing.extents[...]
        // Extents are sorted: skip those that end at or before the start.
        var low = remaining.startIndex, high = remaining.endIndex
        while low < high {
            let middle = (low + high) / 2
            if remaining[middle].end <= start { low = middle + 1 } else { high = middle }
        }
        remaining = remaining[low...]
        var batches: [[Csi_V1_BlockMetadata]] = []
        var batch: [Csi_V1_BlockMetadata] = []
        for extent in remaining {
            let offset = max(extent.offset, start)
            batch.append(.with {
                $0.byteOffset = Int64(offset)
                $0.sizeBytes = Int64(extent.end - offset)
            })
            if batch.count == window.maxResults {
                batches.append(batch)
                batch = []
            }
        }
        if !batch.isEmpty || batches.isEmpty { batches.append(batch) }
        return batches
    }
}
