#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

/// Where a live migration stands, from `query-migrate` on the source.
struct QemuMigrationStatus: Sendable, CustomStringConvertible {
    /// "none", "setup", "active", "pre-switchover", "device", "completed", "failed", "cancelling", "cancelled"...
    let status: String
    /// From the start of the migration to its end (or to now), as QEMU measured it.
    let totalTimeMilliseconds: Int?
    /// How long the guest was paused for the switchover (set once completed).
    let downtimeMilliseconds: Int?
    let setupTimeMilliseconds: Int?
    /// RAM bytes sent so far.
    let transferredBytes: Int?
    /// QEMU's reason when the migration failed.
    let errorDescription: String?

    init(_ answer: [String: Any]) {
        status = answer["status"] as? String ?? "none"
        totalTimeMilliseconds = answer["total-time"] as? Int
        downtimeMilliseconds = answer["downtime"] as? Int
        setupTimeMilliseconds = answer["setup-time"] as? Int
        transferredBytes = (answer["ram"] as? [String: Any])?["transferred"] as? Int
        errorDescription = answer["error-desc"] as? String
    }

    var isFinished: Bool { ["completed", "failed", "cancelled"].contains(status) }

    var description: String {
        var parts = [status]
        if let totalTimeMilliseconds { parts.append("total \(totalTimeMilliseconds) ms") }
        if let downtimeMilliseconds { parts.append("downtime \(downtimeMilliseconds) ms") }
        if let setupTimeMilliseconds { parts.append("setup \(setupTimeMilliseconds) ms") }
        if let transferredBytes { parts.append("\(transferredBytes >> 10) KiB sent") }
        if let errorDescription { parts.append("error: \(errorDescription)") }
        return parts.joined(separator: ", ")
    }
}

/// A live migration driven through QMP, the way libvirt drives it for KubeVirt (minus libvirt):
/// `migrate` on the source toward the target's `-incoming` socket, `query-migrate` until it ends.
/// At the switchover the source pauses, flushes and lets go of the disk; the target takes it and
/// resumes the guest, which does not know it moved.
extension QemuGuest {
    /// Starts migrating this (running) guest to `target` (started with `QemuGuest.incoming`).
    /// `maxBandwidth` (bytes per second) slows the RAM copy down, e.g. to leave time for a
    /// `cancelMigration()`; `downtimeLimit` is the pause QEMU aims for (its default is 300 ms).
    func startMigration(to target: QemuGuest, maxBandwidth: Int = 1 << 30, downtimeLimit: Duration = .milliseconds(300)) throws {
        guard let socket = target.incomingSocketPath else {
            throw QemuGuestFailure(description: "\(target.name) was not started to receive a migration")
        }
        try qmp.execute("migrate-set-parameters", ["max-bandwidth": maxBandwidth,
                                                   "downtime-limit": Int(downtimeLimit.components.seconds * 1000
                                                       + downtimeLimit.components.attoseconds / 1_000_000_000_000_000)])
        try qmp.execute("migrate", ["uri": "unix:\(socket)"])
    }

    func migrationStatus() throws -> QemuMigrationStatus {
        QemuMigrationStatus(try qmp.execute("query-migrate"))
    }

    /// Polls `query-migrate` until the migration completed, failed or was cancelled.
    func waitForMigration(timeout: Duration = .seconds(120)) async throws -> QemuMigrationStatus {
        let deadline = ContinuousClock.now + timeout
        while true {
            let status = try migrationStatus()
            if status.isFinished { return status }
            guard ContinuousClock.now < deadline else {
                throw QemuGuestFailure(description: "\(name): migration still \(status) after \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits until the migration is under way (RAM being copied), e.g. before cancelling it.
    func waitForMigrationActive(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while try migrationStatus().status != "active" {
            guard ContinuousClock.now < deadline else { throw QemuGuestFailure(description: "\(name): migration never became active") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Migrates to `target` and waits until the guest runs there (resuming it with `cont` when its
    /// handover is `.libvirt`). Throws if the migration does not
    /// complete or the target does not resume; returns QEMU's figures (downtime, total time).
    @discardableResult
    func migrate(to target: QemuGuest, timeout: Duration = .seconds(120)) async throws -> QemuMigrationStatus {
        try startMigration(to: target)
        let status = try await waitForMigration(timeout: timeout)
        guard status.status == "completed" else {
            throw QemuGuestFailure(description: "migration \(name) → \(target.name) ended \(status)\n\(qemuLog)\n\(target.qemuLog)")
        }
        if target.handover == .libvirt {
            // Paused with the disk still inactive until `cont`, as libvirt leaves it.
            try await target.waitForRunState("paused", timeout: .seconds(30))
            try target.qmp.execute("cont")
        }
        try await target.waitForRunState("running", timeout: .seconds(30))
        return status
    }

    /// Cancels the migration under way (`migrate_cancel`) and waits until QEMU says it is
    /// cancelled; the guest goes on running here, and the target QEMU exits.
    func cancelMigration(timeout: Duration = .seconds(30)) async throws -> QemuMigrationStatus {
        try qmp.execute("migrate_cancel")
        let status = try await waitForMigration(timeout: timeout)
        guard status.status == "cancelled" else {
            throw QemuGuestFailure(description: "\(name): migration ended \(status) instead of cancelled")
        }
        return status
    }

    /// Polls `query-status` until QEMU's run state is `state`.
    func waitForRunState(_ state: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        var current = try runState()
        while current != state {
            guard ContinuousClock.now < deadline else {
                throw QemuGuestFailure(description: "\(name): run state \(current), not \(state), after \(timeout)\n\(qemuLog)")
            }
            try await Task.sleep(for: .milliseconds(20))
            current = try runState()
        }
    }
}
