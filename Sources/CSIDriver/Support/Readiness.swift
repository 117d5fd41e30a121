import Synchronization

/// Set once the store is open; Probe reports it so kubelet's liveness probe waits for recovery.
final class Readiness: Sendable {
    private let ready = Atomic<Bool>(false)

    var isReady: Bool { ready.load(ordering: .acquiring) }
    func markReady() { ready.store(true, ordering: .releasing) }
}
