#if canImport(Glibc)
@preconcurrency import Glibc
#endif
@testable import CSIDriver
import CSIProto
import CSIValidation
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// Malformed and hostile requests to every service: each gets the CSI spec's code and a message
/// that says what is wrong, the driver keeps serving, and nothing is created, mounted or written.
/// The rows are in the `HostileInputTests+…Rows.swift` files, one per service area.
@Suite("Hostile input", .serialized, .blockingTolerant)
struct HostileInputTests {
    /// Real objects the rows point at, so that each row differs from a valid call in one way only.
    struct Fixture: Sendable {
        let volumeID: String
        let snapshotID: String
        let groupSnapshotID: String
        let groupMemberID: String
        let kubelet: String

        var staging: String { kubelet + "/plugins/kubernetes.io/csi/strata.csi.dev/fixture/globalmount" }
        var target: String { kubelet + "/pods/p/volumes/kubernetes.io~csi/fixture/mount" }
    }

    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        /// nil where the spec asks for success (deleting what is not there, say).
        let expected: RPCError.Code?
        /// A word the error message must contain, so it tells the caller what to fix.
        let hint: String?
        let call: @Sendable (InProcessDriver, Fixture) async throws -> Void

        init(_ name: String, _ expected: RPCError.Code?, hint: String? = nil,
             _ call: @escaping @Sendable (InProcessDriver, Fixture) async throws -> Void) {
            self.name = name
            self.expected = expected
            self.hint = hint
            self.call = call
        }

        var testDescription: String { "\(name) → \(expected.map { "\($0)" } ?? "OK")" }
    }

    /// Put in every `secrets` map: no reply may repeat it.
    static let secret = "hostile-secret-3f9c1a"
    static let secrets = ["password": secret, "token": secret]
    static let mebibyte = String(repeating: "a", count: 1 << 20)
    /// An error message is for people: hostile megabytes must not come back in it.
    static let longestHelpfulMessage = 5000

    static var rows: [Row] { identityRows + controllerRows + snapshotRows + groupRows + nodeRows }

    @Test("Each hostile request gets the spec's code, a helpful message, and changes nothing", arguments: rows)
    func row(_ row: Row) async throws {
        try await Self.withFixture { driver, fixture in
            let volumes = try driver.store.listVolumes(after: nil, limit: 0).items.map(\.id)
            let snapshots = try driver.store.listSnapshots(after: nil, limit: 0).items.map(\.id)
            let watched = [driver.directory.path + "/kubelet", driver.directory.path + "/state", driver.directory.path + "/outside"]
            let before = HostFootprint.capture(directories: watched, scope: driver.directory.path)

            let outcome = await CallOutcome.of { try await row.call(driver, fixture) }

            #expect(outcome.code == row.expected, "\(outcome)")
            if outcome.code != nil {
                #expect(!outcome.message.isEmpty, "an error needs a message")
                #expect(outcome.message.utf8.count <= Self.longestHelpfulMessage, "\(outcome)")
                if let hint = row.hint {
                    #expect(outcome.message.localizedCaseInsensitiveContains(hint), "message should mention \(hint): \(outcome)")
                }
                #expect(!outcome.message.contains(Self.secret), "the message repeats a secret: \(outcome)")
            }
            let probe = try await driver.identity.probe(.init())
            #expect(probe.ready.value, "the driver stopped being ready")
            #expect(try driver.store.listVolumes(after: nil, limit: 0).items.map(\.id) == volumes)
            #expect(try driver.store.listSnapshots(after: nil, limit: 0).items.map(\.id) == snapshots)
            #expect(try driver.store.checkConsistency().isClean)
            let after = HostFootprint.capture(directories: watched, scope: driver.directory.path)
            #expect(before == after, "the request left something behind:\n\(before.difference(to: after))")
        }
    }

    @Test("A CreateVolume without a capacity range gets the default size, not an error")
    func capacityZeroIsDefault() async throws {
        try await InProcessDriver.with { driver in
            var request = Requests.createVolume("no-range")
            request.clearCapacityRange()
            request.secrets = Self.secrets
            let unset = try await driver.controller.createVolume(request).volume
            #expect(unset.capacityBytes == Int64(CapacityRequest.defaultSize))

            let zero = try await driver.controller.createVolume(Requests.createVolume("zero", bytes: 0)).volume
            #expect(zero.capacityBytes == Int64(CapacityRequest.defaultSize))
            let limited = try await driver.controller.createVolume(Requests.createVolume("zero-limited", bytes: 0, limit: 1 << 20)).volume
            #expect(limited.capacityBytes == 1 << 20)
            #expect(try driver.store.checkConsistency().isClean)
        }
    }

    /// Runs `body` against a driver serving every service, with a volume, a snapshot, a group
    /// snapshot and a kubelet directory holding only a symlink out of it, once the node's export
    /// is mounted.
    static func withFixture(_ body: (InProcessDriver, Fixture) async throws -> Void) async throws {
        guard geteuid() == 0, FileManager.default.fileExists(atPath: "/dev/fuse") else {
            print("skipping hostile input rows: the node service needs root and /dev/fuse")
            return
        }
        try await InProcessDriver.with(mode: .all) { driver in
            let kubelet = driver.directory.path + "/kubelet"
            try FileManager.default.createDirectory(atPath: kubelet + "/pods", withIntermediateDirectories: true)
            // A link inside kubelet's directory to one outside it: the node must not follow it.
            let outside = driver.directory.path + "/outside"
            try FileManager.default.createDirectory(atPath: outside + "/volume", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: kubelet + "/pods/escape", withDestinationPath: outside)
            let exports = driver.directory.path + "/state/exports"
            let deadline = ContinuousClock.now + .seconds(10)
            while !HostFootprint.isMountPoint(exports), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            try #require(HostFootprint.isMountPoint(exports),
                         "the node service did not mount its export directory \(MountTableWitness.describe(mentioning: exports))")

            let volume = try await driver.controller.createVolume(Requests.createVolume("fixture", bytes: 8 << 20)).volume
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("fixture-snap", of: volume.volumeID)).snapshot
            let group = try await driver.groupController.createVolumeGroupSnapshot(.with {
                $0.name = "fixture-group"
                $0.sourceVolumeIds = [volume.volumeID]
            }).groupSnapshot
            let fixture = Fixture(
                volumeID: volume.volumeID, snapshotID: snapshot.snapshotID, groupSnapshotID: group.groupSnapshotID,
                groupMemberID: group.snapshots[0].snapshotID, kubelet: kubelet)
            try await body(driver, fixture)
        }
    }

    // MARK: - Identity

    /// Identity takes no arguments; unknown fields (a newer CO's) are ignored, not refused.
    static let identityRows: [Row] = [
        Row("Probe with unknown fields", nil) { d, _ in
            let request = try Csi_V1_ProbeRequest(serializedBytes: [0x08, 0x01, 0x12, 0x03, 0x61, 0x62, 0x63])
            let response = try await d.identity.probe(request)
            #expect(response.ready.value)
        },
        Row("GetPluginInfo with a 1 MiB unknown field", nil) { d, _ in
            var bytes: [UInt8] = [0x0a, 0x80, 0x80, 0x40]  // field 1, length-delimited, 1 MiB
            bytes += [UInt8](repeating: 0x61, count: 1 << 20)
            let info = try await d.identity.getPluginInfo(try Csi_V1_GetPluginInfoRequest(serializedBytes: bytes))
            #expect(info.name == DriverConfiguration.defaultDriverName)
        },
        Row("GetPluginCapabilities with unknown fields", nil) { d, _ in
            _ = try await d.identity.getPluginCapabilities(try Csi_V1_GetPluginCapabilitiesRequest(serializedBytes: [0x28, 0x07]))
        },
    ]
}
