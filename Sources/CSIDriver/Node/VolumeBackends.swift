import BlockStore
import CSIValidation
import NodeHost
import Peering
import Synchronization

/// Where a staged volume's bytes come from: this node's store, or, for a multi-node volume that
/// lives on another node, that node's store over the peer connection. The stager asks for a
/// backend by the volume's registry record and never knows which it got.
protocol VolumeBackendProvider: Sendable {
    /// `fenced` is called when the volume's old owner refuses its I/O because it froze the
    /// volume for this node (the takeover must run for the I/O to go on).
    func open(_ record: StagedVolume, fenced: @escaping @Sendable () -> Void) throws -> OpenedBackend
    /// Keeps the link NodeStage made when the owner admitted this node, for the export that follows.
    func adopt(_ link: RemoteVolumeLink)
}

/// A backend as the stager holds it while the volume is exported.
struct OpenedBackend: Sendable {
    let backend: any BlockBackend
    /// This process stops serving it (a restart resumes it).
    let close: @Sendable () throws -> Void
    /// The volume is unstaged here: after `close`, let go of whatever outlives a restart (the
    /// owner's record that this node stages the volume).
    let release: @Sendable () throws -> Void
    /// Why the volume cannot be served now, while that lasts (its owner is unreachable).
    let problem: @Sendable () -> String?
    /// Set for a volume served from another node: what an ownership handover swaps.
    var movable: MovableBackend? = nil
    /// Set for a volume served from another node: takes the size the owner grew the volume to.
    var resize: (@Sendable (UInt64) -> Void)? = nil
}

/// The driver's backends: the local store, or a link to the volume's owner.
final class DriverBackends: VolumeBackendProvider {
    let context: DriverContext
    /// Links made by NodeStage's attach, waiting for the stager to export them.
    private let attached = Mutex<[String: RemoteVolumeLink]>([:])

    init(context: DriverContext) { self.context = context }

    func adopt(_ link: RemoteVolumeLink) { attached.withLock { $0[link.volumeID] = link } }

    func open(_ record: StagedVolume, fenced: @escaping @Sendable () -> Void) throws -> OpenedBackend {
        guard let owner = record.remoteOwner else {
            let handle = try context.store().open(volumeID: record.volumeID)
            return OpenedBackend(
                backend: StoreVolumeBackend(handle: handle), close: { try handle.close() }, release: {}, problem: { nil })
        }
        guard let peers = context.peers else {
            throw CSIError.failedPrecondition("volume \(record.volumeID) lives on node \(owner.node), and this driver has no peer settings to reach it")
        }
        let link = attached.withLock { $0.removeValue(forKey: record.volumeID) } ?? RemoteVolumeLink(
            volumeID: record.volumeID, nodeID: context.configuration.nodeID,
            owner: PeerEndpoint(host: owner.host, port: owner.port, nodeID: owner.node), epoch: owner.epoch, size: owner.size,
            connector: peers.directory.connector)
        let movable = MovableBackend(RemoteVolumeBackend(link: link), close: { link.close() }, fenced: fenced)
        return OpenedBackend(
            backend: movable, close: { try movable.close() },
            release: { try link.detachWaiting() },
            problem: {
                guard movable.backend is RemoteVolumeBackend, let since = link.unreachableSince else { return nil }
                return "the volume's owner, node \(owner.node), has not answered for \(since.duration(to: .now)); I/O waits for it"
            },
            movable: movable,
            resize: { link.resize(to: $0) })
    }
}

/// Serves a volume whose writable head lives on another node: every read, write, discard and
/// flush goes to the owner (see `RemoteVolumeLink`).
final class RemoteVolumeBackend: BlockBackend {
    let link: RemoteVolumeLink

    init(link: RemoteVolumeLink) { self.link = link }

    var size: UInt64 { link.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try link.read(into: buffer, at: offset) }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try link.write(bytes, at: offset) }
    func discard(at offset: UInt64, length: UInt64) throws { try link.discard(at: offset, length: length) }
    func flush() throws { try link.flush() }
}
