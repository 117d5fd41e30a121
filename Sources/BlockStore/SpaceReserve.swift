import Glibc
import Logging
import Synchronization

/// A few allocated MiB kept in `space-reserve` beside the catalog, given back to the filesystem
/// when a deletion fails for lack of space and retaken afterwards.
///
/// Deleting is how space is freed, yet a deletion must commit to the catalog and SQLite's log
/// needs room to grow: on a full disk, without a reserve, nothing could be deleted through the
/// store. The reserve is best effort: when it cannot be allocated (the disk is already full) the
/// store works without it and tries again after the next deletion.
final class SpaceReserve: Sendable {
    let path: String
    let bytes: Int
    private let logger: Logger
    /// Whether the file currently holds its `bytes` allocated.
    private let isFilled = Mutex(false)

    init(path: String, bytes: Int, logger: Logger) {
        self.path = path
        self.bytes = bytes
        self.logger = logger
        // A reserve left by a run configured with one is not wanted now.
        if bytes == 0 { _ = unlink(path) }
        refill()
    }

    /// Allocates the reserve if it is not already; failures are logged, not thrown.
    func refill() {
        guard bytes > 0 else { return }
        isFilled.withLock { filled in
            guard !filled else { return }
            let descriptor = retryingEINTR { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
            guard descriptor >= 0 else {
                logger.warning("cannot open the space reserve \(path): \(String(cString: strerror(errno)))")
                return
            }
            defer { _ = close(descriptor) }
            let result = posix_fallocate(descriptor, 0, off_t(bytes))
            guard result == 0 else {
                // A partial allocation would only take space the store needs now.
                _ = ftruncate(descriptor, 0)
                logger.warning("cannot allocate the \(bytes >> 20) MiB space reserve: \(String(cString: strerror(result)))")
                return
            }
            // A run configured with a larger reserve may have left a longer file.
            _ = ftruncate(descriptor, off_t(bytes))
            filled = true
        }
    }

    /// Gives the reserve's blocks back to the filesystem. Returns false when there was nothing to give.
    func release() -> Bool {
        isFilled.withLock { filled in
            guard filled else { return false }
            filled = false
            let descriptor = retryingEINTR { open(path, O_RDWR | O_CLOEXEC) }
            guard descriptor >= 0 else { return false }
            defer { _ = close(descriptor) }
            guard ftruncate(descriptor, 0) == 0 else { return false }
            logger.notice("released the \(bytes >> 20) MiB space reserve to let a deletion commit on a full disk")
            return true
        }
    }

    /// Runs `deletion`; when it fails for lack of space, releases the reserve and runs it once
    /// more. The caller calls `refill()` once the deletion's files are removed, so the reserve is
    /// retaken from the space the deletion freed.
    func runDeletion<T>(_ deletion: () throws -> T) throws -> T {
        do {
            return try deletion()
        } catch let error as StoreError where error.code == .noSpace {
            guard release() else { throw error }
            return try deletion()
        }
    }
}
