import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

@Suite("GroupController", .blockingTolerant)
struct GroupControllerTests {
    @Test("A group snapshot captures every volume at one point, idempotently, and is deleted as a whole")
    func lifecycle() async throws {
        try await InProcessDriver.with { driver in
            #expect(try await driver.identity.getPluginCapabilities(.init()).capabilities.map(\.service.type).contains(.groupControllerService))
            #expect(try await driver.groupController.groupControllerGetCapabilities(.init()).capabilities.map(\.rpc.type) == [.createDeleteGetVolumeGroupSnapshot])

            var volumes: [String] = []
            var handles: [VolumeHandle] = []
            for index in 0..<3 {
                let id = try await driver.controller.createVolume(Requests.createVolume("db-\(index)", bytes: 1 << 20)).volume.volumeID
                volumes.append(id)
                let handle = try driver.store.open(volumeID: id)
                try Data(repeating: UInt8(index + 1), count: 4096).withUnsafeBytes { try handle.write($0, at: 0) }
                handles.append(handle)
            }
            let request = Csi_V1_CreateVolumeGroupSnapshotRequest.with { $0.name = "backup-1"; $0.sourceVolumeIds = volumes }
            let group = try await driver.groupController.createVolumeGroupSnapshot(request).groupSnapshot
            // Writes after the group snapshot must not show in it.
            for handle in handles {
                try Data(repeating: 0xEE, count: 4096).withUnsafeBytes { try handle.write($0, at: 0) }
                try handle.close()
            }
            #expect(group.readyToUse && group.snapshots.count == 3 && group.groupSnapshotID.hasPrefix("grp-"))
            #expect(Set(group.snapshots.map(\.sourceVolumeID)) == Set(volumes))
            #expect(group.snapshots.allSatisfy { $0.groupSnapshotID == group.groupSnapshotID })

            for (index, snapshot) in group.snapshots.sorted(by: { volumes.firstIndex(of: $0.sourceVolumeID)! < volumes.firstIndex(of: $1.sourceVolumeID)! }).enumerated() {
                let clone = try await driver.controller.createVolume(Requests.createVolume("restore-\(index)", bytes: 1 << 20, snapshot: snapshot.snapshotID)).volume
                #expect(try read(4096, from: clone.volumeID, at: 0, store: driver.store) == Data(repeating: UInt8(index + 1), count: 4096))
            }

            let again = try await driver.groupController.createVolumeGroupSnapshot(request).groupSnapshot
            #expect(again.groupSnapshotID == group.groupSnapshotID)
            #expect(await statusCode {
                try await driver.groupController.createVolumeGroupSnapshot(.with { $0.name = "backup-1"; $0.sourceVolumeIds = Array(volumes.prefix(2)) })
            } == .alreadyExists)

            let got = try await driver.groupController.getVolumeGroupSnapshot(.with { $0.groupSnapshotID = group.groupSnapshotID }).groupSnapshot
            #expect(Set(got.snapshots.map(\.snapshotID)) == Set(group.snapshots.map(\.snapshotID)))
            #expect(await statusCode {
                try await driver.groupController.getVolumeGroupSnapshot(.with { $0.groupSnapshotID = group.groupSnapshotID; $0.snapshotIds = ["snap-other"] })
            } == .invalidArgument)
            #expect(await statusCode { try await driver.controller.deleteSnapshot(.with { $0.snapshotID = group.snapshots[0].snapshotID }) } == .failedPrecondition)

            _ = try await driver.groupController.deleteVolumeGroupSnapshot(.with { $0.groupSnapshotID = group.groupSnapshotID })
            _ = try await driver.groupController.deleteVolumeGroupSnapshot(.with { $0.groupSnapshotID = group.groupSnapshotID })
            #expect(await statusCode { try await driver.groupController.getVolumeGroupSnapshot(.with { $0.groupSnapshotID = group.groupSnapshotID }) } == .notFound)
            #expect(try await driver.controller.listSnapshots(.init()).entries.isEmpty)
            #expect(try driver.store.checkConsistency().isClean)
        }
    }

    @Test("Malformed group requests are refused with the spec's codes", arguments: [
        ("no name", Csi_V1_CreateVolumeGroupSnapshotRequest.with { $0.sourceVolumeIds = ["vol-x"] }, RPCError.Code.invalidArgument),
        ("no volumes", .with { $0.name = "g" }, .invalidArgument),
        ("a volume twice", .with { $0.name = "g"; $0.sourceVolumeIds = ["vol-a", "vol-a"] }, .invalidArgument),
        ("unknown volume", .with { $0.name = "g"; $0.sourceVolumeIds = ["vol-00000000-0000-0000-0000-000000000000"] }, .notFound),
    ])
    func malformed(_ name: String, _ request: Csi_V1_CreateVolumeGroupSnapshotRequest, _ expected: RPCError.Code) async throws {
        try await InProcessDriver.with { driver in
            #expect(await statusCode { try await driver.groupController.createVolumeGroupSnapshot(request) } == expected, "\(name)")
            #expect(await statusCode { try await driver.groupController.deleteVolumeGroupSnapshot(.init()) } == .invalidArgument)
            #expect(await statusCode { try await driver.groupController.getVolumeGroupSnapshot(.init()) } == .invalidArgument)
        }
    }
}
