import Dispatch
import Foundation
import Synchronization
import Testing

/// Runs every test of a suite on threads that may block, instead of Swift's cooperative pool.
///
/// Why: the tests are written in a blocking style on purpose (they wait for processes, poll for
/// sockets and mounts, read QEMU's serial console), and the cooperative pool has as many threads
/// as there are cores: two here. Two tests blocking at once stopped every other test's async
/// work: a whole run measured the pool starved for 10 to 51 seconds at a time, long enough for an
/// in-process peer call to pass its 10 s deadline while nothing was wrong with it. Under this
/// trait a test's task prefers `BlockingTolerantExecutor`, whose threads are added as jobs need
/// them, so a blocked test holds only its own thread. Product code keeps its own discipline
/// (store work off the cooperative pool, see Peering's BlockingWork); what it runs in unstructured
/// tasks stays on the cooperative pool, which the tests no longer occupy.
///
/// Every suite carries it (`@Suite("…", .blockingTolerant)`); BlockingTolerantRuleTests checks that.
public struct BlockingTolerantExecution: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await withTaskExecutorPreference(BlockingTolerantExecutor.shared) { try await function() }
    }
}

extension Trait where Self == BlockingTolerantExecution {
    /// Runs the suite's tests on threads that may block (see `BlockingTolerantExecution`).
    public static var blockingTolerant: Self { Self() }
}

/// A task executor with a thread for every job that finds no idle one: a job that blocks holds
/// one thread, never the others' turn. Idle threads wait a while for more work, then end.
public final class BlockingTolerantExecutor: TaskExecutor, Sendable {
    public static let shared = BlockingTolerantExecutor()

    /// An idle thread, waiting for the job handed to it.
    private final class Worker: @unchecked Sendable {
        let wake = DispatchSemaphore(value: 0)
        /// Set by `enqueue` (under the executor's lock) before `wake` is signalled.
        var job: UnownedJob?
    }

    private let idle = Mutex<[Worker]>([])
    private static let idleLifetime: DispatchTimeInterval = .seconds(10)

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let worker = idle.withLock { idle -> Worker? in
            guard let worker = idle.popLast() else { return nil }
            worker.job = job
            return worker
        }
        if let worker {
            worker.wake.signal()
        } else {
            let thread = Thread { [self] in work(first: job) }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    private func work(first: UnownedJob) {
        let executor = asUnownedTaskExecutor()
        let worker = Worker()
        var next: UnownedJob? = first
        while let job = next {
            job.runSynchronously(on: executor)
            next = nil
            idle.withLock { $0.append(worker) }
            if worker.wake.wait(timeout: .now() + Self.idleLifetime) == .timedOut {
                // Still listed as idle: nobody handed it a job, so it ends. Otherwise a job was
                // handed over just as the wait ended, and its signal is on the way.
                let ending = idle.withLock { idle in
                    guard let index = idle.firstIndex(where: { $0 === worker }) else { return false }
                    idle.remove(at: index)
                    return true
                }
                if ending { return }
                worker.wake.wait()
            }
            next = idle.withLock { _ in
                defer { worker.job = nil }
                return worker.job
            }
        }
    }
}
