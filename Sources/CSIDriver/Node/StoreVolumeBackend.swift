import BlockStore
import Glibc
import NodeHost

/// Serves an open store volume to the kernel through the FUSE export. Store errors become the
/// errno the filesystem above should see (a full pool is ENOSPC, not EIO): the FUSE layer knows
/// NodeHost's and POSIX errors only, and passes an errno it is given to the kernel as it is.
final class StoreVolumeBackend: BlockBackend {
    let handle: VolumeHandle

    init(handle: VolumeHandle) { self.handle = handle }

    var size: UInt64 { handle.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try Self.kernelErrors { try handle.read(into: buffer, at: offset) }
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try Self.kernelErrors { try handle.write(bytes, at: offset) }
    }
    func discard(at offset: UInt64, length: UInt64) throws {
        try Self.kernelErrors { try handle.discard(at: offset, length: length) }
    }
    func flush() throws { try Self.kernelErrors { try handle.flush() } }

    private static func kernelErrors(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as StoreError {
            throw kernelError(for: error)
        }
    }

    /// The store's error as a NodeHost error carrying the errno the kernel passes up.
    static func kernelError(for error: StoreError) -> NodeHostError {
        let number: Int32
        switch error.code {
        case .noSpace: number = ENOSPC
        case .outOfRange: number = EINVAL
        case .invalidArgument: number = EINVAL
        case .unrelated: number = EINVAL
        case .busy: number = EBUSY
        case .corrupt: number = EUCLEAN  // what ext4 and xfs return for corruption (EFSCORRUPTED)
        case .notFound: number = ESTALE  // the volume behind the open file is gone
        case .alreadyExists: number = EEXIST
        case .chainDepthLimit: number = EIO
        case .io: number = EIO
        }
        return NodeHostError(.systemCall, "store: \(error)", errno: number)
    }
}
