/// What NodeHost serves to the kernel: a flat, fixed-size (but growable) array of bytes.
/// The CSI layer adapts the store's volume handle to it; NodeHost knows nothing else about it.
///
/// Calls arrive concurrently from several FUSE worker threads; offsets and lengths are
/// already clamped to `size`.
public protocol BlockBackend: AnyObject, Sendable {
    /// Current size in bytes. It may grow (online expansion); call
    /// `FuseExporter.refreshSize(name:)` afterwards so the kernel sees it.
    var size: UInt64 { get }
    /// Fills `buffer` with the bytes at `offset`; unwritten ranges read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Releases the range; afterwards it must read as zeros, because the kernel's loop driver
    /// uses punch-hole for both DISCARD and WRITE_ZEROES.
    func discard(at offset: UInt64, length: UInt64) throws
    /// Makes every write that completed before the call durable.
    func flush() throws
}

/// A backend whose reads can complete later, on a thread of its own (a network event loop),
/// instead of holding a FUSE worker thread until the answer comes: a worker parked per request
/// and woken for its reply costs two context switches a read, which on a two-core node is most
/// of what a remote 4 KiB read costs.
public protocol AsyncReadingBackend: BlockBackend {
    /// Starts reading `count` bytes at `offset` when that can be done without blocking the
    /// caller, and returns true; `completion` then runs exactly once, on any thread, with the
    /// bytes (valid only during the call), or with nil when the read could not be answered that
    /// way (a connection ended, the volume moved, a deadline passed): the caller then reads
    /// with `read(into:at:)`, which waits, retries and reports errors. Returns false (and never
    /// calls `completion`) when it cannot start one now.
    func startRead(count: Int, at offset: UInt64, completion: @escaping @Sendable (UnsafeRawBufferPointer?) -> Void) -> Bool
}
