import Dispatch
import Synchronization

/// Runs synchronous store and device work (fsync, SQLite commits, ioctls) on Dispatch's pool,
/// never on Swift's cooperative threads, which are as few as the cores: a slow fsync there would
/// stall every other RPC.
package enum BlockingWork {
    package static func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Swift.Result { try work() })
            }
        }
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
