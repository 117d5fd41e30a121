import Glibc

/// A reader–writer lock that prefers writers, so a snapshot waiting for I/O to drain is not
/// starved by a steady stream of readers. Not recursive: taking it again on a thread that holds
/// it for writing stops the process. (pthread answers EDEADLK there; going on regardless once
/// released the outer hold early and unlocked twice, which left the lock's reader count negative
/// and the next writer waiting forever.)
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<T>(_ body: () throws -> T) rethrows -> T {
        let result = pthread_rwlock_rdlock(lock)
        precondition(result == 0, "pthread_rwlock_rdlock failed (\(result)): taken again by a thread that holds it?")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` under the read lock if it can be had at once (no writer holds it or waits
    /// for it); nil, without running it, otherwise.
    func withReadLockIfFree<T>(_ body: () throws -> T) rethrows -> T? {
        guard pthread_rwlock_tryrdlock(lock) == 0 else { return nil }
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<T>(_ body: () throws -> T) rethrows -> T {
        let result = pthread_rwlock_wrlock(lock)
        precondition(result == 0, "pthread_rwlock_wrlock failed (\(result)): taken again by a thread that holds it?")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A fixed pool of locks; a key always maps to the same lock (a power-of-two count).
/// Used for per-cluster-chunk locking without one lock object per chunk.
final class StripedLocks: @unchecked Sendable {
    private let locks: UnsafeMutablePointer<pthread_rwlock_t>
    let count: Int

    init(count: Int = 256) {
        self.count = count
        locks = .allocate(capacity: count)
        for index in 0..<count {
            pthread_rwlock_init(locks + index, nil)
        }
    }

    deinit {
        for index in 0..<count {
            pthread_rwlock_destroy(locks + index)
        }
        locks.deallocate()
    }

    @inline(__always)
    func withWriteLock<T>(for key: Int, _ body: () throws -> T) rethrows -> T {
        let lock = locks + (key & (count - 1))
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
