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
