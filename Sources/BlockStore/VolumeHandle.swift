import Synchronization

/// An open volume for I/O. Thread-safe: any number of threads may read, write and discard at
/// once; handles of the same volume share one engine and see each other's writes at once.
public final class VolumeHandle: Sendable {
    let store: BlockStore
    let engine: OpenVolume
    private let closed = Atomic<Bool>(false)
    private let opened: Volume?

    init(store: BlockStore, engine: OpenVolume) {
        self.store = store
        self.engine = engine
        opened = try? store.volume(id: engine.volumeID)
    }

    deinit {
        if !closed.load(ordering: .acquiring) { try? close() }
    }

    /// The volume as the catalog describes it now.
    public var volume: Volume {
        if let current = try? store.volume(id: engine.volumeID) { return current }
        var fallback = opened!
        fallback.size = size
        return fallback
    }

    public var volumeID: String { engine.volumeID }

    public var size: UInt64 { engine.structure.withReadLock { engine.size } }

    /// Fills `buffer` from `offset`: unwritten ranges read as zeros; past the size is `.outOfRange`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkOpen()
        try engine.read(into: buffer, at: offset)
    }

    /// `read`, only if it can be done at once: from the page cache, without waiting for the
    /// volume's lock. False (`buffer` perhaps partly filled) when it would have waited; for a
    /// caller that must not block, such as a network event loop, which then hands it on.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        try checkOpen()
        return try engine.readIfCached(into: buffer, at: offset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try checkOpen()
        try engine.write(bytes, at: offset)
    }

    /// Makes a range read as zeros, freeing space; inherited data below is hidden, never exposed.
    public func discard(at offset: UInt64, length: UInt64) throws {
        try checkOpen()
        try engine.discard(at: offset, length: length)
    }

    /// When this returns, every write and discard that returned before it survives a crash.
    public func flush() throws {
        try checkOpen()
        try engine.flush(persistAllocation: store.persistAllocation)
    }

    /// Flushes and releases the handle; the last user of a volume closes its files.
    public func close() throws {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // The release writes nothing while another user (a handle, a background flatten) keeps
        // the volume open, so the flush comes first: every write this handle saw return is
        // durable when close returns, last user or not. The handle is released even when the
        // flush fails, so it never leaks.
        let flushed = Result { try engine.flush(persistAllocation: store.persistAllocation, closedIsDone: true) }
        try store.releaseOpenVolume(engine, external: true)
        try flushed.get()
    }

    private func checkOpen() throws {
        guard !closed.load(ordering: .relaxed) else {
            throw StoreError(.invalidArgument, "the handle of volume \(engine.volumeID) is closed")
        }
    }
}
