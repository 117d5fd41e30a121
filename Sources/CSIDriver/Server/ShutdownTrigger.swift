import Synchronization

/// Fired once (by a signal handler, a test, or an embedding program) to stop a `DriverServer`.
public final class ShutdownTrigger: Sendable {
    private let state = Mutex<(fired: Bool, waiters: [CheckedContinuation<Bool, Never>])>((false, []))

    public init() {}

    public func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            guard !state.fired else { return [] }
            state.fired = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume(returning: true) }
    }

    /// Returns true once fired, false if the waiting task is cancelled first.
    func wait() async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let firedAlready = state.withLock { state in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if firedAlready { continuation.resume(returning: !Task.isCancelled) }
            }
        } onCancel: {
            let waiters = state.withLock { state in
                defer { state.waiters = [] }
                return state.waiters
            }
            waiters.forEach { $0.resume(returning: false) }
        }
    }
}
