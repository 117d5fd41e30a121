import Dispatch
import Glibc
import Synchronization

/// The FUSE requests whose reply comes after their worker thread returned (reads an
/// `AsyncReadingBackend` answers later). The session must outlive every one of them: a reply
/// through a destroyed session touches freed memory, and a request never answered hangs its
/// caller (the loop device, and the VM above it). So a stop or suspend closes this first, and
/// waits for the count to reach zero before the session is destroyed.
final class PendingReplies: Sendable {
    private let state = Mutex<(outstanding: Int, closed: Bool)>((0, false))
    /// Where a request that could not be answered later is answered the blocking way, off the
    /// thread that reported it (an event loop must not block).
    let fallback = DispatchQueue(label: "strata.nodehost.fuse.fallback", attributes: .concurrent)

    /// Counts one more request answered later; false once closed (answer it now instead).
    func begin() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.outstanding += 1
            return true
        }
    }

    /// The request was answered (or will not be answered later after all).
    func end() {
        state.withLock { $0.outstanding -= 1 }
    }

    var outstanding: Int { state.withLock { $0.outstanding } }

    /// Takes no more requests, and waits up to `seconds` for the outstanding ones; true when
    /// none is left.
    func closeAndWait(seconds: Double) -> Bool {
        state.withLock { $0.closed = true }
        var waited = 0.0
        while outstanding > 0 {
            if waited >= seconds { return false }
            usleep(1000)
            waited += 0.001
        }
        return true
    }
}
