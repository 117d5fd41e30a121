import CSIValidation
import Synchronization

/// Per-name and per-id exclusion for CSI operations.
///
/// The CSI spec asks a plugin to answer ABORTED when an operation is already pending for the same
/// volume or snapshot, rather than queueing: the CO retries with backoff. Operations on different
/// keys never wait for each other, so there is no global lock on the request path.
final class OperationLocks: Sendable {
    private let held = Mutex<Set<String>>([])

    func withLocks<Value: Sendable>(
        _ keys: [String], _ body: () async throws -> Value
    ) async throws -> Value {
        let acquired = held.withLock { held -> Bool in
            guard keys.allSatisfy({ !held.contains($0) }) else { return false }
            held.formUnion(keys)
            return true
        }
        guard acquired else {
            throw CSIError.aborted("an operation on \(keys.joined(separator: ", ")) is already in progress; retry later")
        }
        defer { held.withLock { held in keys.forEach { held.remove($0) } } }
        return try await body()
    }

    var heldCount: Int { held.withLock { $0.count } }
}

/// Lock keys: one namespace per kind, so a volume and a snapshot may share a name.
enum LockKey {
    static func volumeName(_ name: String) -> String { "volume-name/\(name)" }
    static func volume(_ id: String) -> String { "volume/\(id)" }
    static func snapshotName(_ name: String) -> String { "snapshot-name/\(name)" }
    static func snapshot(_ id: String) -> String { "snapshot/\(id)" }
    static func groupName(_ name: String) -> String { "group-name/\(name)" }
    static func group(_ id: String) -> String { "group/\(id)" }
}
