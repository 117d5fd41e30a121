import Foundation
import Synchronization

/// Blocking work of a test on threads of its own. Not Dispatch's global queues
/// (`DispatchQueue.global()`, `concurrentPerform`): on Linux their workers come from the same
/// thread budget as Swift's cooperative pool, so a test blocking there stalls the async work of
/// every other test in the run (in-process gRPC calls then pass their deadlines).
public enum OwnThreads {
    /// Runs `body(index)` for every index in `0..<count`, each on a new thread, all at once;
    /// returns when all have ended, with their results in index order.
    public static func run<Value: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> Value) -> [Value] {
        let results = Mutex<[Int: Value]>([:])
        let done = DispatchSemaphore(value: 0)
        for index in 0..<count {
            let thread = Thread {
                let value = body(index)
                results.withLock { $0[index] = value }
                done.signal()
            }
            thread.start()
        }
        for _ in 0..<count { done.wait() }
        return results.withLock { results in (0..<count).map { results[$0]! } }
    }

    /// Runs `body` on a new thread while the calling task waits without holding a thread.
    public static func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}
