import GRPCCore
import PeerProto

extension PeerDirectory {
    /// The peer that took `snapshotID` (its origin), found by asking the peers that hold it; nil
    /// when no peer holds it (every one answered NOT_FOUND, or only copies answered and their
    /// origin is this node or none of the peers). UNAVAILABLE when a peer that might be the
    /// origin could not be asked: the caller retries, rather than act as if it did not exist.
    public func locateSnapshotOrigin(_ snapshotID: String) async throws -> PeerEndpoint? {
        var unreachable: [String] = []
        var namedOrigin: String?
        let endpoints = await endpoints()
        for endpoint in endpoints {
            do {
                let manifest = try await connector.withClient(endpoint) { client in
                    try await client.getSnapshot(.with { $0.snapshotID = snapshotID }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
                }
                if manifest.originNode == endpoint.nodeID { return endpoint }
                namedOrigin = manifest.originNode
            } catch let error as RPCError where error.code == .notFound {
                continue
            } catch {
                unreachable.append("\(endpoint): \(error)")
            }
        }
        if let namedOrigin, let origin = endpoints.first(where: { $0.nodeID == namedOrigin }) { return origin }
        guard unreachable.isEmpty else {
            throw PeeringError.unavailable("snapshot \(snapshotID) is not on node \(localNode) and not every peer could be asked: \(unreachable.joined(separator: "; "))")
        }
        return nil
    }
}
