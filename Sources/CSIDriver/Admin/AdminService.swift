import AdminProto
import BlockStore
import CSIValidation
import GRPCCore
import Peering

/// The `strata` CLI's view of the node's store, served on the root-only admin socket.
///
/// Reads come from committed catalog state in one read transaction each, off the I/O path (no
/// lock a read or write of a volume takes); Flatten runs the store's own flatten, which copies a
/// cluster batch at a time while I/O goes on, exactly as a background flatten does.
struct AdminService: Strata_Admin_V1_Admin.SimpleServiceProtocol {
    let context: DriverContext

    func getTree(request: Strata_Admin_V1_GetTreeRequest, context _: ServerContext) async throws -> Strata_Admin_V1_GetTreeResponse {
        let store = try context.store()
        try Self.checkReference(request.object, field: "object", required: false)
        var response = try await BlockingWork.run { [self] () throws -> Strata_Admin_V1_GetTreeResponse in
            let topology = try store.topology()
            let tree = AdminTree(topology, placements: placements(in: topology))
            guard !request.object.isEmpty else { return .with { $0.roots = tree.forest() } }
            let layerID = try Self.layer(of: request.object, in: tree.topology)
            return .with { $0.roots = tree.around(layerID) }
        }
        if request.object.isEmpty { response.remoteVolumes = remoteVolumes() }
        return response
    }

    func listObjects(request: Strata_Admin_V1_ListObjectsRequest, context _: ServerContext) async throws -> Strata_Admin_V1_ListObjectsResponse {
        let store = try context.store()
        var response = try await BlockingWork.run { [self] () throws -> Strata_Admin_V1_ListObjectsResponse in
            let topology = try store.topology()
            let placed = placements(in: topology)
            let layers = Dictionary(uniqueKeysWithValues: topology.layers.map { ($0.id, $0) })
            func below(_ layerID: Int64) -> Int64 {
                var total: UInt64 = 0
                var next = layers[layerID]?.parentID
                var steps = 0
                while let current = next, steps <= layers.count {
                    total += layers[current]?.allocatedBytes ?? 0
                    next = layers[current]?.parentID
                    steps += 1
                }
                return Int64(total)
            }
            return .with { response in
                response.volumes = topology.heads.map { head in
                    .with {
                        $0.id = head.volume.id
                        $0.name = head.volume.name
                        $0.sizeBytes = Int64(head.volume.size)
                        $0.ownBytes = Int64(layers[head.layerID]?.allocatedBytes ?? 0)
                        $0.sharedBytes = below(head.layerID)
                        $0.depth = Int32(head.volume.chainDepth)
                        switch head.volume.source {
                        case .snapshot(let id)?, .volume(let id)?: $0.source = id
                        case nil: break
                        }
                        $0.createdUnixMs = Int64((head.volume.createdAt.timeIntervalSince1970 * 1000).rounded())
                        if let placement = placed[head.volume.id] { $0.placement = placement }
                    }
                }
                response.snapshots = topology.points.filter { !$0.hidden }.map { point in
                    .with {
                        $0.id = point.snapshot.id
                        $0.name = point.snapshot.name
                        $0.sizeBytes = Int64(point.snapshot.size)
                        $0.ownBytes = Int64(point.snapshot.allocatedBytes)
                        $0.sharedBytes = below(point.layerID)
                        $0.depth = Int32(layers[point.layerID]?.depth ?? 0)
                        $0.source = point.snapshot.sourceVolumeID
                        $0.originNode = point.snapshot.originNode ?? ""
                        $0.createdUnixMs = Int64((point.snapshot.createdAt.timeIntervalSince1970 * 1000).rounded())
                    }
                }
            }
        }
        response.remoteVolumes = remoteVolumes()
        return response
    }

    func getSpace(request: Strata_Admin_V1_GetSpaceRequest, context _: ServerContext) async throws -> Strata_Admin_V1_GetSpaceResponse {
        let store = try context.store()
        let remote = remoteVolumes().count
        return try await BlockingWork.run {
            let capacity = try store.capacity()
            let census = try store.census()
            let flattening = try store.topology().flattening
            return .with {
                $0.capacityBytes = Int64(capacity.totalBytes)
                $0.freeBytes = Int64(capacity.freeBytes)
                $0.provisionedBytes = Int64(census.provisionedBytes)
                $0.allocatedBytes = Int64(census.allocatedBytes)
                $0.reserveBytes = Int64(store.reserveBytes)
                $0.volumes = Int32(census.volumes)
                $0.snapshots = Int32(census.snapshots)
                $0.hiddenSnapshots = Int32(census.hiddenSnapshots)
                $0.layers = Int32(census.layers)
                $0.deepestChain = Int32(census.deepestChain)
                $0.flattening = flattening
                $0.replicaSnapshots = Int32(census.replicaSnapshots)
                $0.importedLayers = Int32(census.importedLayers)
                $0.importedBytes = Int64(census.importedBytes)
                $0.multiNodeVolumes = Int32(census.multiNodeVolumes)
                $0.remoteServedVolumes = Int32(census.remotelyStagedVolumes)
                $0.movingVolumes = Int32(census.movingVolumes)
                $0.remoteStagedVolumes = Int32(remote)
            }
        }
    }

    func flatten(
        request: Strata_Admin_V1_FlattenRequest, response: RPCWriter<Strata_Admin_V1_FlattenProgress>, context _: ServerContext
    ) async throws {
        try Self.checkReference(request.volume, field: "volume", required: true)
        let store = try context.store()
        let volumeID = try await BlockingWork.run { () throws -> String in
            if let volume = try? store.volume(id: request.volume) { return volume.id }
            if let volume = try store.volume(named: request.volume) { return volume.id }
            throw CSIError.notFound("volume \(request.volume) not found")
        }
        // The newest count only: a slow reader must not hold the copy back.
        let (progress, sink) = AsyncStream<(Int, Int)>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let work = Task {
            try await BlockingWork.run {
                defer { sink.finish() }
                try store.flatten(volumeID: volumeID) { done, total in sink.yield((done, total)) }
            }
        }
        var total = 0
        for await (done, clusters) in progress {
            total = clusters
            try await response.write(.with {
                $0.doneClusters = Int64(done)
                $0.totalClusters = Int64(clusters)
            })
        }
        try await work.value
        let depth = try await BlockingWork.run { try store.volume(id: volumeID).chainDepth }
        try await response.write(.with {
            $0.doneClusters = Int64(total)
            $0.totalClusters = Int64(total)
            $0.finished = true
            $0.depthAfter = Int32(depth)
        })
    }

    // MARK: Helpers

    static func checkReference(_ reference: String, field: String, required: Bool) throws(CSIError) {
        if reference.isEmpty {
            if required { throw .invalidArgument("\(field) is required") }
            return
        }
        try RequestFields.requireName(reference, field: field)
    }

    /// The layer of a volume (its head) or snapshot, by id or name.
    static func layer(of reference: String, in topology: StoreTopology) throws(CSIError) -> Int64 {
        if let head = topology.heads.first(where: { $0.volume.id == reference || $0.volume.name == reference }) { return head.layerID }
        if let point = topology.points.first(where: { !$0.hidden && ($0.snapshot.id == reference || $0.snapshot.name == reference) }) {
            return point.layerID
        }
        throw .notFound("no volume or snapshot is called \(reference)")
    }
}
