import BlockStore
import NodeHost

/// Serves an open store volume to the kernel through the FUSE export.
final class StoreVolumeBackend: BlockBackend {
    let handle: VolumeHandle

    init(handle: VolumeHandle) { self.handle = handle }

    var size: UInt64 { handle.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try handle.read(into: buffer, at: offset) }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try handle.write(bytes, at: offset) }
    func discard(at offset: UInt64, length: UInt64) throws { try handle.discard(at: offset, length: length) }
    func flush() throws { try handle.flush() }
}
