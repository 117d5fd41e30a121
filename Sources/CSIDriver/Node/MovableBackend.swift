import Foundation
import NodeHost
import Peering

/// A backend that can be swapped under a running export: a volume served from its owner on
/// another node becomes a volume of this node's store when ownership moves here, without the
/// kernel (or the VM above it) noticing more than a pause. `pause()` lets the requests in flight
/// finish and holds new ones; `replace(with:)` then swaps the backend; `resume()` lets them go.
/// A request the old owner refuses as fenced (it froze the volume for this node, and this node
/// has not committed it yet: a handover cut by a restart) waits for the swap and runs again on
/// the new backend; `fenced` is told, to get the handover going.
final class MovableBackend: BlockBackend, @unchecked Sendable {
    private let condition = NSCondition()
    private var current: any BlockBackend
    private var closeCurrent: @Sendable () throws -> Void
    private var paused = false
    private var inFlight = 0
    private let fenced: @Sendable () -> Void

    init(_ backend: any BlockBackend, close: @escaping @Sendable () throws -> Void = {}, fenced: @escaping @Sendable () -> Void = {}) {
        current = backend
        closeCurrent = close
        self.fenced = fenced
    }

    var size: UInt64 { condition.withLock { current }.size }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try call { try $0.read(into: buffer, at: offset) } }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try call { try $0.write(bytes, at: offset) } }
    func discard(at offset: UInt64, length: UInt64) throws { try call { try $0.discard(at: offset, length: length) } }
    func flush() throws { try call { try $0.flush() } }

    /// Waits for the requests in flight; new ones wait until `resume()`.
    func pause() {
        condition.withLock {
            paused = true
            while inFlight > 0 { condition.wait() }
        }
    }

    /// Swaps the backend while paused, closing the one it replaces.
    func replace(with backend: any BlockBackend, close: @escaping @Sendable () throws -> Void) {
        let old = condition.withLock { () -> @Sendable () throws -> Void in
            precondition(paused, "replace(with:) needs pause() first")
            current = backend
            defer { closeCurrent = close }
            return closeCurrent
        }
        try? old()
    }

    /// The backend now, for work done while paused (a flush through the old owner).
    var backend: any BlockBackend { condition.withLock { current } }

    func resume() {
        condition.withLock {
            paused = false
            condition.broadcast()
        }
    }

    /// Closes the backend it holds (the volume is no longer exported).
    func close() throws { try condition.withLock { closeCurrent }() }

    private func call<Value>(_ body: (any BlockBackend) throws -> Value) throws -> Value {
        while true {
            let backend = condition.withLock { () -> any BlockBackend in
                while paused { condition.wait() }
                inFlight += 1
                return current
            }
            let outcome: Result<Value, any Error>
            do { outcome = .success(try body(backend)) } catch { outcome = .failure(error) }
            let retry = condition.withLock { () -> Bool in
                inFlight -= 1
                if inFlight == 0 { condition.broadcast() }
                guard case .failure(let error) = outcome, error is VolumeFenced else { return false }
                return true
            }
            guard retry else { return try outcome.get() }
            fenced()
            condition.withLock {
                while current === backend { condition.wait() }
            }
        }
    }
}
