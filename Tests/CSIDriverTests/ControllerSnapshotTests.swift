import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

@Suite("Controller: snapshots and clones", .blockingTolerant)
struct ControllerSnapshotTests {
    @Test("CreateSnapshot is ready at once, idempotent by name, ALREADY_EXISTS for another source")
    func createSnapshot() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("src", bytes: 4 << 20)).volume
            let other = try await driver.controller.createVolume(Requests.createVolume("other")).volume
            let before = Date()
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("snap", of: volume.volumeID)).snapshot
            #expect(snapshot.readyToUse && snapshot.sizeBytes == 4 << 20 && snapshot.sourceVolumeID == volume.volumeID)
            #expect(snapshot.creationTime.date.timeIntervalSince(before) > -2)
            let again = try await driver.controller.createSnapshot(Requests.createSnapshot("snap", of: volume.volumeID)).snapshot
            #expect(again.snapshotID == snapshot.snapshotID)
            #expect(await statusCode { try await driver.controller.createSnapshot(Requests.createSnapshot("snap", of: other.volumeID)) } == .alreadyExists)
            let got = try await driver.controller.getSnapshot(.with { $0.snapshotID = snapshot.snapshotID }).snapshot
            #expect(got.snapshotID == snapshot.snapshotID)
        }
    }

    @Test("Data written through one clone is invisible to its siblings and its snapshot")
    func dataIndependence() async throws {
        try await InProcessDriver.with { driver in
            let golden = try await driver.controller.createVolume(Requests.createVolume("golden", bytes: 4 << 20)).volume
            let image = Data((0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            try write(image, to: golden.volumeID, at: 12_345, store: driver.store)
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("golden-snap", of: golden.volumeID)).snapshot
            let a = try await driver.controller.createVolume(Requests.createVolume("vm-a", bytes: 4 << 20, snapshot: snapshot.snapshotID)).volume
            let b = try await driver.controller.createVolume(Requests.createVolume("vm-b", bytes: 4 << 20, snapshot: snapshot.snapshotID)).volume
            let c = try await driver.controller.createVolume(Requests.createVolume("vm-c", bytes: 4 << 20, volume: golden.volumeID)).volume

            // Unaligned writes that straddle clusters, different in each clone.
            try write(Data(repeating: 0xAA, count: 70_000), to: a.volumeID, at: 20_000, store: driver.store)
            try write(Data(repeating: 0xBB, count: 5), to: b.volumeID, at: 65_534, store: driver.store)

            #expect(try read(200_000, from: a.volumeID, at: 12_345, store: driver.store)
                == image.prefix(20_000 - 12_345) + Data(repeating: 0xAA, count: 70_000) + image[(90_000 - 12_345)..<(212_345 - 12_345)])
            var expectedB = image.prefix(200_000)
            expectedB.replaceSubrange((65_534 - 12_345)..<(65_539 - 12_345), with: Data(repeating: 0xBB, count: 5))
            #expect(try read(200_000, from: b.volumeID, at: 12_345, store: driver.store) == expectedB)
            #expect(try read(image.count, from: c.volumeID, at: 12_345, store: driver.store) == image)
            #expect(try read(image.count, from: golden.volumeID, at: 12_345, store: driver.store) == image)

            // The snapshot itself, seen through a fresh clone, still holds the golden image.
            let probe = try await driver.controller.createVolume(Requests.createVolume("probe", bytes: 4 << 20, snapshot: snapshot.snapshotID)).volume
            #expect(try read(image.count, from: probe.volumeID, at: 12_345, store: driver.store) == image)
        }
    }

    @Test("A snapshot of a volume being written is crash-consistent: what was written before is in it")
    func snapshotWhileWriting() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("live", bytes: 4 << 20)).volume
            let handle = try driver.store.open(volumeID: volume.volumeID)
            let before = Data(repeating: 0x11, count: 64 << 10)
            try before.withUnsafeBytes { try handle.write($0, at: 0) }
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("live-snap", of: volume.volumeID)).snapshot
            let after = Data(repeating: 0x22, count: 64 << 10)
            try after.withUnsafeBytes { try handle.write($0, at: 0) }
            try handle.close()
            let clone = try await driver.controller.createVolume(Requests.createVolume("live-clone", bytes: 4 << 20, snapshot: snapshot.snapshotID)).volume
            #expect(try read(64 << 10, from: clone.volumeID, at: 0, store: driver.store) == before)
            #expect(try read(64 << 10, from: volume.volumeID, at: 0, store: driver.store) == after)
        }
    }

    @Test("Deleting a snapshot with clones hides it at once and keeps the clones' data")
    func deleteSnapshotWithClones() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("base", bytes: 1 << 20)).volume
            try write(Data(repeating: 0x5A, count: 4096), to: volume.volumeID, at: 0, store: driver.store)
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("base-snap", of: volume.volumeID)).snapshot
            let clone = try await driver.controller.createVolume(Requests.createVolume("base-clone", bytes: 1 << 20, snapshot: snapshot.snapshotID)).volume
            _ = try await driver.controller.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshotID })
            _ = try await driver.controller.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshotID })
            #expect(await statusCode { try await driver.controller.getSnapshot(.with { $0.snapshotID = snapshot.snapshotID }) } == .notFound)
            #expect(try await driver.controller.listSnapshots(.init()).entries.isEmpty)
            #expect(await statusCode {
                try await driver.controller.createVolume(Requests.createVolume("too-late", snapshot: snapshot.snapshotID))
            } == .notFound)
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID })
            #expect(try read(4096, from: clone.volumeID, at: 0, store: driver.store) == Data(repeating: 0x5A, count: 4096))
            #expect(try driver.store.checkConsistency().isClean)
        }
    }

    @Test("ListSnapshots filters by id and source and pages with tokens")
    func listSnapshots() async throws {
        try await InProcessDriver.with { driver in
            let first = try await driver.controller.createVolume(Requests.createVolume("v1")).volume
            let second = try await driver.controller.createVolume(Requests.createVolume("v2")).volume
            var ids: [String] = []
            for index in 0..<5 {
                ids.append(try await driver.controller.createSnapshot(Requests.createSnapshot("s\(index)", of: first.volumeID)).snapshot.snapshotID)
            }
            let lone = try await driver.controller.createSnapshot(Requests.createSnapshot("lone", of: second.volumeID)).snapshot

            #expect(try await driver.controller.listSnapshots(.with { $0.snapshotID = lone.snapshotID }).entries.map(\.snapshot.snapshotID) == [lone.snapshotID])
            #expect(try await driver.controller.listSnapshots(.with { $0.snapshotID = "snap-does-not-exist" }).entries.isEmpty)
            #expect(try await driver.controller.listSnapshots(.with { $0.sourceVolumeID = second.volumeID }).entries.map(\.snapshot.snapshotID) == [lone.snapshotID])
            #expect(try await driver.controller.listSnapshots(.with { $0.sourceVolumeID = "vol-unknown" }).entries.isEmpty)

            let page = try await driver.controller.listSnapshots(.with { $0.sourceVolumeID = first.volumeID; $0.maxEntries = 2 })
            #expect(page.entries.count == 2 && !page.nextToken.isEmpty)
            let rest = try await driver.controller.listSnapshots(.with { $0.sourceVolumeID = first.volumeID; $0.startingToken = page.nextToken })
            #expect((page.entries + rest.entries).map(\.snapshot.snapshotID) == ids)
            #expect(rest.nextToken.isEmpty)
        }
    }
}

func write(_ data: Data, to volumeID: String, at offset: UInt64, store: BlockStore) throws {
    let handle = try store.open(volumeID: volumeID)
    try data.withUnsafeBytes { try handle.write($0, at: offset) }
    try handle.flush()
    try handle.close()
}

func read(_ count: Int, from volumeID: String, at offset: UInt64, store: BlockStore) throws -> Data {
    let handle = try store.open(volumeID: volumeID)
    defer { try? handle.close() }
    var data = Data(count: count)
    try data.withUnsafeMutableBytes { try handle.read(into: $0, at: offset) }
    return data
}
