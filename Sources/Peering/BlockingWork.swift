import Dispatch
import NIOPosix
import Synchronization

/// Runs synchronous store and device work (fsync, SQLite commits, ioctls) on threads of its own,
/// never on Swift's cooperative threads, which are as few as the cores: a slow fsync there would
/// stall every other RPC. Not on Dispatch's global queues either: on Linux their workers come
/// from the same thread budget as the cooperative pool's, so blocked global-queue work starves
/// it too (measured here: 16 global-queue jobs blocked for 3 s delayed a cooperative job by
/// 6.9 s). NIO's thread pools are plain threads, outside that budget.
package enum BlockingWork {
    /// For the work of control calls (CSI and peer RPCs, admin commands).
    private static let controlPool = startedPool(threads: 16)
    /// For remote block I/O served to other nodes, many requests at once (see
    /// RemoteVolumeService's exchangeConcurrency), apart so that a busy disk cannot hold up
    /// control calls.
    private static let blockIOPool = startedPool(threads: 64)

    package static func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            submit(to: controlPool) { continuation.resume(with: Swift.Result { try work() }) }
        }
    }

    /// Runs `work` on the block I/O threads; returns at once.
    package static func submitBlockIO(_ work: @escaping @Sendable () -> Void) {
        submit(to: blockIOPool, work)
    }

    /// The pools live as long as the process, so `work` always runs (a pool that is never shut
    /// down never cancels).
    private static func submit(to pool: NIOThreadPool, _ work: @escaping @Sendable () -> Void) {
        pool.submit { _ in work() }
    }

    private static func startedPool(threads: Int) -> NIOThreadPool {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool
    }
}

/// The other way round: async work run on a Swift task while this thread, one that may block
/// (a FUSE worker, a benchmark's main thread; never a cooperative one), waits for it.
package enum WaitingThread {
    package static func run<Value: Sendable>(_ work: @escaping @Sendable () async throws -> Value) -> Result<Value, any Error> {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<Value, any Error>?>(nil)
        Task {
            let result: Result<Value, any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        return outcome.withLock { $0! }
    }
}
