import Dispatch

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
