import BlockStore
import GRPCCore
import Logging
import PeerProto

/// Frees copies of snapshots their origin deleted. The origin tells the peers it knows when it
/// deletes a snapshot (`SnapshotDeleted`, a hint), and every `replicaCheckInterval` each node
/// asks the origin of every replica it holds whether the snapshot still exists. Only the origin's
/// own NOT_FOUND drops a replica; an origin that cannot be reached keeps it. A dropped replica's
/// layers are freed once no clone here reads them.
public struct ReplicaJanitor: Sendable {
    let directory: PeerDirectory
    let logger: Logger
    let store: @Sendable () throws -> BlockStore

    /// Checks every visible replica (hidden ones belong to their clone and go with it).
    public func checkAll() async {
        guard let replicas = await replicasHere() else { return }
        let endpoints = await directory.endpoints()
        for replica in replicas where !replica.hidden {
            await check(replica, endpoints: endpoints)
        }
    }

    /// Checks one snapshot, if it is a replica here.
    public func check(snapshotID: String) async {
        guard let replica = await replicasHere()?.first(where: { $0.snapshotID == snapshotID }), !replica.hidden else { return }
        await check(replica, endpoints: await directory.endpoints())
    }

    private func replicasHere() async -> [ReplicaRecord]? {
        guard let store = try? store() else { return nil }
        return try? await BlockingWork.run { try store.replicas() }
    }

    private func check(_ replica: ReplicaRecord, endpoints: [PeerEndpoint]) async {
        for endpoint in endpoints where endpoint.nodeID == replica.originNode {
            do {
                _ = try await directory.connector.withClient(endpoint) { client in
                    try await client.getSnapshot(
                        .with { $0.snapshotID = replica.snapshotID }, options: PeerClientPool.options(timeout: PeerClientPool.unaryTimeout))
                }
                return
            } catch let error as RPCError where error.code == .notFound {
                do {
                    let store = try self.store()
                    try await BlockingWork.run { try store.dropReplica(snapshotID: replica.snapshotID) }
                    logger.notice("dropped replica \(replica.snapshotID): its origin \(replica.originNode) deleted it")
                } catch {
                    logger.warning("dropping replica \(replica.snapshotID) failed", metadata: ["error": "\(error)"])
                }
                return
            } catch {
                continue
            }
        }
    }

    /// Tells every peer that a snapshot taken here is gone (best effort; the periodic check catches up).
    public func announceDeletion(of snapshotID: String) async {
        for endpoint in await directory.endpoints() {
            _ = try? await directory.connector.withClient(endpoint) { client in
                try await client.snapshotDeleted(
                    .with { $0.snapshotID = snapshotID }, options: PeerClientPool.options(timeout: .seconds(3)))
            }
        }
    }
}
