import Dispatch

/// Flatten: copy everything a volume inherits into its own head and detach it from its parents.
extension BlockStore {
    /// Makes a volume self-contained (chain depth 1). I/O on the volume goes on meanwhile; the
    /// parents' layers are released (and freed if nothing else needs them). `progress` hears the
    /// clusters examined so far and the volume's cluster count as the copy goes on.
    public func flatten(volumeID: String, progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        try flattenLock.withLock { _ in
            state.withLock { _ = $0.cancelledFlattens.remove(volumeID) }
            _ = try flattenHoldingLock(volumeID, progress: progress)
        }
    }

    /// Returns false when cancelled (volume deleted or store closing). With `keepingSharedBase`,
    /// the flatten keeps the chain up to the highest layer something else reads (a collapse).
    private func flattenHoldingLock(
        _ volumeID: String, keepingSharedBase: Bool = false, progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Bool {
        let volume = try acquireOpenVolume(volumeID, external: false)
        var result: Result<Bool, any Error> = .success(false)
        do {
            let shouldStop = { [self] in
                state.withLock { $0.closed || $0.cancelledFlattens.contains(volumeID) }
            }
            let plan = keepingSharedBase ? try catalog.read { try collapsePlan(of: volumeID, $0) } : .whole
            switch plan {
            case .nothing:
                break
            case .whole:
                if try volume.copyUpInheritedClusters(shouldStop: shouldStop, progress: progress) {
                    try finishFlatten(volume, shouldStop: shouldStop)
                    result = .success(true)
                }
            case .keeping(let base):
                let scope = OpenVolume.CollapseScope(base: base.position, changedSinceBase: try changesAbove(base, of: volumeID))
                if try volume.copyUpInheritedClusters(above: scope, shouldStop: shouldStop, progress: progress) {
                    try finishCollapse(volume, keeping: base, scope: scope, shouldStop: shouldStop)
                    result = .success(true)
                }
            }
        } catch {
            result = .failure(error)
        }
        do {
            try releaseOpenVolume(volume, external: false)
        } catch {
            if case .success = result { result = .failure(error) }
        }
        return try result.get()
    }

    private func finishFlatten(_ volume: OpenVolume, shouldStop: () -> Bool) throws {
        try controlLock.withLock { _ in
            guard !shouldStop() else { return }
            var freed: [Int64] = []
            try volume.finishFlatten { headLayerID, headBytes in
                freed = try catalog.write { db -> [Int64] in
                    guard let row = try db.volumeRow(id: volume.volumeID), row.headLayerID == headLayerID else {
                        throw StoreError(.busy, "volume \(volume.volumeID) changed during flatten")
                    }
                    let head = try db.requireLayer(headLayerID)
                    try db.setAllocatedBytes(headBytes, ofLayer: headLayerID)
                    guard let parentID = head.parentID else { return [] }
                    try recordLineage(of: headLayerID, db)
                    try db.detachLayerFromParent(headLayerID)
                    var freed = try db.releaseReference(to: parentID)
                    if let hidden = row.hiddenSnapshotID, let snapshot = try db.snapshotRow(id: hidden) {
                        try db.deleteSnapshotRow(id: hidden)
                        try db.clearHiddenSnapshot(ofVolume: row.id)
                        freed += try db.releaseReference(to: snapshot.layerID)
                    }
                    return freed
                }
            }
            removeLayerFiles(freed)
        }
    }

    /// Starts a background flatten when a volume crossed the soft depth limit.
    func scheduleFlattenIfDeep(_ volume: Volume) {
        guard options.backgroundFlatten, volume.chainDepth > options.softChainDepthLimit else { return }
        scheduleFlatten(volume.id, keepingSharedBase: false)
    }

    /// Collapses, in the background, the layers of a volume's chain that only it reads into its
    /// head (`collapsePrivateLayers`). An ownership handover calls it on the new owner: the
    /// layers it copied are the volume's history (every cluster each one held, superseded above
    /// or not), and the next handover would send them all again.
    public func collapsePrivateLayersInBackground(volumeID: String) {
        scheduleFlatten(volumeID, keepingSharedBase: true)
    }

    /// Whether `collapsePrivateLayers` would find layers to collapse (a catalog read only).
    public func hasPrivateLayersToCollapse(volumeID: String) throws -> Bool {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return try catalog.read { try collapsePlan(of: volumeID, $0) } != .nothing
    }

    /// Copies into a volume's head what the layers only it reads hold, and drops those layers: the
    /// chain keeps the layers something else reads (a snapshot, another clone, a golden image
    /// copied from another node), and the head moves onto the highest of them. With no such
    /// layer it is a whole flatten. Returns false when there was nothing to collapse. `.busy`
    /// when the chain changed meanwhile (a snapshot froze the head): nothing changed.
    @discardableResult
    public func collapsePrivateLayers(volumeID: String) throws -> Bool {
        guard Identifier.isVolumeID(volumeID) else { throw StoreError.notFound("volume \(volumeID)") }
        return try flattenLock.withLock { _ in
            state.withLock { _ = $0.cancelledFlattens.remove(volumeID) }
            return try flattenHoldingLock(volumeID, keepingSharedBase: true)
        }
    }

    private func scheduleFlatten(_ id: String, keepingSharedBase: Bool) {
        let scheduled = state.withLock { state -> Bool in
            guard !state.closed, !state.scheduledFlattens.contains(id) else { return false }
            state.scheduledFlattens.insert(id)
            state.cancelledFlattens.remove(id)
            return true
        }
        guard scheduled else { return }
        logger.info("volume \(id): \(keepingSharedBase ? "collapsing its private layers" : "flattening, past the soft depth limit,") in the background")
        backgroundQueue.async(group: backgroundWork) { [self] in
            defer { state.withLock { _ = $0.scheduledFlattens.remove(id) } }
            do {
                try flattenLock.withLock { _ in _ = try flattenHoldingLock(id, keepingSharedBase: keepingSharedBase) }
            } catch let error as StoreError where error.code == .notFound {
                // Deleted before its turn.
            } catch let error as StoreError where error.code == .busy {
                logger.info("background flatten of \(id) gave way to a change of its chain: \(error)")
            } catch {
                logger.warning("background flatten of \(id) failed: \(error)")
            }
        }
    }

    /// Waits until background flattens scheduled so far have finished (for tests and shutdown).
    public func waitForBackgroundWork() {
        backgroundWork.wait()
    }
}
