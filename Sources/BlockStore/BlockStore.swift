import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization

/// A layered copy-on-write block store in one directory: a SQLite catalog (`catalog.sqlite`) and
/// a folder of layer files (`layers/`), and a few MiB kept in `space-reserve` so that deletions
/// can commit on a full disk. One process at a time owns a directory (`store.lock`).
///
/// Every method is synchronous and thread-safe. Control operations (create, delete, snapshot,
/// expand, open, the last step of a flatten) are serialized by `controlLock`; they are all O(1)
/// in volume size. I/O goes through `VolumeHandle` and never takes that lock.
public final class BlockStore: Sendable {
    public let directory: String
    let options: StoreOptions
    let logger: Logger
    let catalog: Catalog
    package let layerDirectory: LayerDirectory
    let controlLock = Mutex<Void>(())
    /// Volume creations that arrive together share one transaction and one fsync.
    let creations = GroupCommit<Volume>()
    let state: Mutex<StoreState>
    /// Serializes flattens (explicit and background).
    let flattenLock = Mutex<Void>(())
    let backgroundQueue = DispatchQueue(label: "strata.blockstore.flatten", qos: .utility)
    let backgroundWork = DispatchGroup()
    let spaceReserve: SpaceReserve
    private let lockFile: Int32

    /// What the store tracks in memory, guarded by `state`.
    struct StoreState {
        struct OpenEntry {
            var volume: OpenVolume
            /// Open `VolumeHandle`s: a volume with any cannot be deleted.
            var handles: Int
            /// Internal users such as a flatten.
            var internalUsers: Int
        }

        var nextLayerID: Int64
        var open: [String: OpenEntry] = [:]
        var closed = false
        var scheduledFlattens: Set<String> = []
        var cancelledFlattens: Set<String> = []
    }

    /// Opens the store in `directory`, creating it if needed; migrates the catalog and reconciles
    /// it with the layer files (orphan files are collected, dirty maps recovered; a catalog row
    /// whose file is missing is a `.corrupt` error).
    public init(directory: String, options: StoreOptions = .init()) throws {
        guard Self.isValidClusterSize(options.defaultClusterSize) else {
            throw StoreError(.invalidArgument, "default cluster size \(options.defaultClusterSize) is not a power of two in 4 KiB–1 MiB")
        }
        guard options.softChainDepthLimit >= 1, options.hardChainDepthLimit >= 2 else {
            throw StoreError(.invalidArgument, "chain depth limits must be at least 1 (soft) and 2 (hard)")
        }
        self.directory = directory
        self.options = options
        self.logger = options.logger
        try SystemDirectory.create(directory)
        layerDirectory = LayerDirectory(path: directory + "/layers")
        try SystemDirectory.create(layerDirectory.path)
        lockFile = Glibc.open(directory + "/store.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFile >= 0 else { throw StoreError.system("open store.lock", errno: errno) }
        // A child forked by this process between its fork and exec briefly shares the lock of a
        // store just closed; wait a little before calling the directory busy.
        var attempts = 0
        while flock(lockFile, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            attempts += 1
            if code == EWOULDBLOCK && attempts < 100 {
                usleep(20_000)
                continue
            }
            _ = Glibc.close(lockFile)
            if code == EWOULDBLOCK { throw StoreError(.busy, "store \(directory) is open in another process") }
            throw StoreError.system("flock store.lock", errno: code)
        }
        do {
            catalog = try Catalog(path: directory + "/catalog.sqlite")
            let highestFile = try Self.reconcile(catalog: catalog, layers: layerDirectory, logger: options.logger)
            let highestRow = try catalog.read { try $0.maxLayerID() }
            state = Mutex(StoreState(nextLayerID: max(highestFile, highestRow) + 1))
            spaceReserve = SpaceReserve(path: directory + "/space-reserve", bytes: options.spaceReserveBytes, logger: options.logger)
        } catch {
            _ = Glibc.close(lockFile)
            throw error
        }
    }

    deinit {
        // Background work holds the store, so the only one that can still run is the one whose
        // end released the last reference, here: waiting for it would wait for ourselves.
        shutDown(waitingForBackgroundWork: false)
    }

    /// Stops background work, flushes and closes every open volume, and releases the directory.
    /// Handles still open fail afterwards. Calling it twice is harmless.
    public func close() {
        shutDown(waitingForBackgroundWork: true)
    }

    private func shutDown(waitingForBackgroundWork: Bool) {
        let alreadyClosed = state.withLock { state -> Bool in
            defer { state.closed = true }
            return state.closed
        }
        guard !alreadyClosed else { return }
        if waitingForBackgroundWork { backgroundWork.wait() }
        controlLock.withLock { _ in
            let entries = state.withLock { state -> [StoreState.OpenEntry] in
                defer { state.open.removeAll() }
                return Array(state.open.values)
            }
            for entry in entries {
                do {
                    try entry.volume.close(persistAllocation: persistAllocation)
                } catch {
                    logger.error("closing volume \(entry.volume.volumeID) failed: \(error)")
                }
            }
            catalog.close()
            _ = Glibc.close(lockFile)
        }
    }

    // MARK: Open volumes

    /// Opens a volume for I/O; every handle of a volume shares one index.
    public func open(volumeID: String) throws -> VolumeHandle {
        let volume = try acquireOpenVolume(volumeID, external: true)
        return VolumeHandle(store: self, engine: volume)
    }

    /// The shared engine of a volume, opened on first use. Runs under `controlLock` so the chain
    /// it reads cannot change while the files are opened.
    func acquireOpenVolume(_ volumeID: String, external: Bool) throws -> OpenVolume {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return try controlLock.withLock { _ in
            try throwIfClosed()
            if let volume = state.withLock({ state -> OpenVolume? in
                guard var entry = state.open[volumeID] else { return nil }
                if external { entry.handles += 1 } else { entry.internalUsers += 1 }
                state.open[volumeID] = entry
                return entry.volume
            }) {
                return volume
            }
            let (row, chain) = try catalog.read { db -> (VolumeRow, [LayerRow]) in
                guard let row = try db.volumeRow(id: volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
                return (row, try db.chain(endingAt: row.headLayerID))
            }
            let head = chain.last!
            var headBytes = head.allocatedBytes
            if !head.materialized {
                try materializeLayerLocked(head)
            } else if let recovered = try Self.recoverIfDirty(head, layers: layerDirectory, catalog: catalog, logger: logger, currentBoot: nil) {
                // Its last close failed (a full disk): writes it never mapped are not read, but
                // they hold blocks nothing would free. Punched, not adopted (no boot given): the
                // close that would have made them durable was refused, and the space is needed.
                headBytes = recovered
            }
            let volume = try OpenVolume.open(
                volumeID: volumeID, chain: chain.map { ($0.id, $0.materialized) }, size: row.size,
                clusterSize: row.clusterSize, persistedHeadBytes: headBytes, directory: layerDirectory)
            try attachLineage(volume)
            state.withLock { state in
                state.open[volumeID] = StoreState.OpenEntry(volume: volume, handles: external ? 1 : 0, internalUsers: external ? 0 : 1)
            }
            return volume
        }
    }

    /// Creates the files of a layer that has none yet: files first (durable), then the catalog mark.
    func materializeLayerLocked(_ layer: LayerRow) throws {
        try layerDirectory.createLayer(layer.id, clusterSize: layer.clusterSize)
        do {
            try catalog.write { try $0.setMaterialized(layer.id) }
        } catch {
            removeLayerFiles([layer.id])
            throw error
        }
    }

    /// Drops one user of an open volume; the last one flushes and closes it.
    func releaseOpenVolume(_ volume: OpenVolume, external: Bool) throws {
        try controlLock.withLock { _ in
            let isLast = state.withLock { state -> Bool in
                guard var entry = state.open[volume.volumeID], entry.volume === volume else { return true }
                if external { entry.handles -= 1 } else { entry.internalUsers -= 1 }
                if entry.handles + entry.internalUsers <= 0 {
                    state.open[volume.volumeID] = nil
                    return true
                }
                state.open[volume.volumeID] = entry
                return false
            }
            if isLast { try volume.close(persistAllocation: persistAllocation) }
        }
    }

    func openVolume(_ volumeID: String) -> OpenVolume? {
        state.withLock { $0.open[volumeID]?.volume }
    }

    /// Records a layer's allocated bytes (the catalog step of a flush).
    func persistAllocation(_ layerID: Int64, _ bytes: UInt64) throws {
        try catalog.write { try $0.setAllocatedBytes(bytes, ofLayer: layerID) }
    }

    // MARK: Helpers

    func throwIfClosed() throws {
        if state.withLock({ $0.closed }) { throw StoreError(.invalidArgument, "the store is closed") }
    }

    func allocateLayerID() -> Int64 {
        state.withLock { state in
            defer { state.nextLayerID += 1 }
            return state.nextLayerID
        }
    }

    /// Removes the files of layers the catalog no longer has (after the commit that freed them).
    func removeLayerFiles(_ layerIDs: [Int64]) {
        guard !layerIDs.isEmpty else { return }
        for layerID in layerIDs {
            do {
                try layerDirectory.removeLayer(layerID)
            } catch {
                logger.warning("removing files of layer \(layerID) failed, the next open collects them: \(error)")
            }
        }
        do {
            try lineageDirectory.remove(layerIDs)
        } catch {
            logger.warning("removing lineage of layers \(layerIDs) failed, the next open collects it: \(error)")
        }
        try? SystemDirectory.synchronize(layerDirectory.path)
    }

    static func isValidClusterSize(_ size: UInt32) -> Bool {
        size >= 4096 && size <= 1 << 20 && size & (size - 1) == 0
    }

    static func now() -> Double {
        // Millisecond precision keeps the value identical after a round trip through SQLite.
        (Date().timeIntervalSince1970 * 1000).rounded() / 1000
    }
}
