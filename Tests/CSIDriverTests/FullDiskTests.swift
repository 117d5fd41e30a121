#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// Issue 7: a full disk yields RESOURCE_EXHAUSTED and a consistent store, not corruption.
/// The driver's state directory is a 64 MiB ext4 filesystem on a loop device, filled for real.
@Suite("Full disk", .blockingTolerant)
struct FullDiskTests {
    static let chunk = 1 << 20

    @Test("No space is RESOURCE_EXHAUSTED")
    func noSpaceMapsToResourceExhausted() {
        #expect(StoreError(.noSpace, "write layer 3: No space left on device").rpcErrorCode == .resourceExhausted)
    }

    @Test("Filling the state filesystem fails writes with noSpace, RPCs with RESOURCE_EXHAUSTED, and corrupts nothing")
    func fillTheDisk() async throws {
        guard let disk = try LoopFilesystem.makeIfPossible(mebibytes: 64) else { return }
        defer {
            let problem = disk.tearDown()
            #expect(problem == nil, "tearing the test filesystem down: \(problem ?? "")")
            #expect(!HostFootprint.isMountPoint(disk.mountPoint), "the test filesystem is still mounted")
            #expect(!disk.isAttached, "\(disk.device) is still attached")
        }
        let storeDirectory = disk.mountPoint + "/state/store"
        let kept = pattern(seed: 7, count: 8 << 20)
        var keptID = ""

        try await InProcessDriver.with(configure: { $0.stateDirectory = disk.mountPoint + "/state" }) { driver in
            let store = try driver.store
            // Data flushed before the disk fills must come back byte for byte.
            let keep = try await driver.controller.createVolume(Requests.createVolume("keep", bytes: Int64(kept.count))).volume
            keptID = keep.volumeID
            try Self.write(kept, to: try store.open(volumeID: keptID), flush: true)

            // Fill: thin volumes, written until the filesystem refuses.
            var fillers: [String] = []
            var writeFailure: StoreError?
            var openHandles: [VolumeHandle] = []
            while writeFailure == nil, fillers.count < 8 {
                let filler = try await driver.controller.createVolume(Requests.createVolume("filler-\(fillers.count)", bytes: 32 << 20)).volume
                fillers.append(filler.volumeID)
                let handle = try store.open(volumeID: filler.volumeID)
                openHandles.append(handle)
                do {
                    try Self.write(pattern(seed: UInt64(fillers.count), count: 32 << 20), to: handle, flush: false, close: false)
                    try handle.flush()
                } catch let error as StoreError {
                    writeFailure = error
                }
            }
            let failure = try #require(writeFailure, "64 MiB never filled up")
            #expect(failure.code == .noSpace, "a full disk surfaced as \(failure)")

            // While full, control RPCs either still fit or are refused with RESOURCE_EXHAUSTED.
            var refusals: [CallOutcome] = []
            for attempt in 0..<64 {
                let outcome = await CallOutcome.of {
                    try await driver.controller.createSnapshot(Requests.createSnapshot("while-full-\(attempt)", of: fillers[0]))
                }
                if outcome.code != nil { refusals.append(outcome) }
                let create = await CallOutcome.of { try await driver.controller.createVolume(Requests.createVolume("while-full-\(attempt)", bytes: 1 << 20)) }
                if create.code != nil { refusals.append(create) }
            }
            let whileFull = try store.checkConsistency()
            #expect(whileFull.isClean, "while full: \(whileFull)")
            #expect(!refusals.isEmpty, "the full disk never surfaced through an RPC")
            for refusal in refusals {
                #expect(refusal.code == .resourceExhausted, "a full disk answered \(refusal)")
            }

            // Close the fillers: their last flush may fail for lack of space, with noSpace.
            for handle in openHandles {
                do { try handle.close() } catch let error as StoreError { #expect(error.code == .noSpace, "closing a filler: \(error)") }
            }
            // A close whose last flush failed leaves its map flagged dirty, as a crash would (the
            // next open of the store recovers it); nothing else may be amiss.
            var closedWhileFull = try store.checkConsistency()
            closedWhileFull.dirtyMaps = []
            #expect(closedWhileFull.isClean, "after closing volumes on a full disk: \(closedWhileFull)")
            // Deleting is how a CO frees space: it must work on the full disk (the store gives
            // back its reserve when the catalog's log cannot grow, and retakes it afterwards).
            let deletion = await CallOutcome.of { try await driver.controller.deleteVolume(.with { $0.volumeID = fillers[0] }) }
            #expect(deletion.code == nil, "deleting a volume on a full disk: \(deletion)")
            // Its data lives on in the snapshots taken while full: they go too, and with them the space.
            try Self.deleteVolumes(named: "while-full-", through: driver)
            // The volume that met the full disk is usable again at once.
            let again = pattern(seed: 42, count: 2 << 20)
            try Self.write(again, to: try store.open(volumeID: fillers.last!), flush: true)
            #expect(try Self.read(fillers.last!, bytes: again.count, from: store) == again)
            for id in fillers.dropFirst() {
                let outcome = await CallOutcome.of { try await driver.controller.deleteVolume(.with { $0.volumeID = id }) }
                #expect(outcome.code == nil, "deleting a filler to free space: \(outcome)")
            }

            let report = try store.checkConsistency()
            #expect(report.isClean, "\(report)")
            #expect(try Self.read(keptID, bytes: kept.count, from: store) == kept, "flushed data changed")
            // Space freed is space usable again.
            let after = try await driver.controller.createVolume(Requests.createVolume("after", bytes: 4 << 20)).volume
            let fresh = pattern(seed: 99, count: 4 << 20)
            try Self.write(fresh, to: try store.open(volumeID: after.volumeID), flush: true)
            #expect(try Self.read(after.volumeID, bytes: fresh.count, from: store) == fresh)
            store.close()
        }

        // And the directory reopens cleanly, with the data.
        let reopened = try BlockStore(directory: storeDirectory)
        defer { reopened.close() }
        let report = try reopened.checkConsistency()
        #expect(report.isClean, "\(report)")
        #expect(try reopened.listVolumes(after: nil, limit: 0).items.map(\.name).sorted() == ["after", "keep"])
        #expect(try Self.read(keptID, bytes: kept.count, from: reopened) == kept, "flushed data changed after reopening")
    }

    @Test("On a full disk a deletion commits by giving back the space reserve; without a reserve it cannot")
    func deletionUsesTheReserve() throws {
        for reserve in [8 << 20, 0] {
            guard let disk = try LoopFilesystem.makeIfPossible(mebibytes: 32) else { return }
            defer { disk.tearDown() }
            let directory = disk.mountPoint + "/store"
            let options = StoreOptions(spaceReserveBytes: reserve)
            let setUp = try BlockStore(directory: directory, options: options)
            let doomed = try setUp.createVolume(name: "doomed", size: 4 << 20)
            let snapshotted = try setUp.createVolume(name: "snapshotted", size: 4 << 20)
            let snapshot = try setUp.createSnapshot(name: "snapshot", of: snapshotted.id)
            try Self.write(pattern(seed: 5, count: 4 << 20), to: try setUp.open(volumeID: doomed.id), flush: true)
            // Closing empties the catalog's log, so the next commit must grow it: the case where
            // a full disk stops a deletion.
            setUp.close()
            let store = try BlockStore(directory: directory, options: options)
            defer { store.close() }

            // Every last block taken (root may use ext4's reserved blocks too).
            let ballast = disk.mountPoint + "/ballast"
            let filled = Self.fillCompletely(ballast)
            #expect(filled > 0)

            do {
                try store.deleteSnapshot(id: snapshot.id)
                try store.deleteVolume(id: doomed.id)
                #expect(reserve > 0, "without a reserve the deletions fit after all: this test proves nothing here")
            } catch let error as StoreError {
                #expect(reserve == 0, "a deletion failed on a full disk despite the reserve: \(error)")
                #expect(error.code == .noSpace, "\(error)")
                continue
            }
            #expect(try store.listVolumes(after: nil, limit: 0).items.map(\.name) == ["snapshotted"])
            #expect(try store.listSnapshots(after: nil, limit: 0).items.isEmpty)
            #expect(try store.checkConsistency().isClean)
            // Once there is room again, the reserve is whole after the next open.
            try FileManager.default.removeItem(atPath: ballast)
            store.close()
            let reopened = try BlockStore(directory: directory)
            defer { reopened.close() }
            let reserveFile = try FileManager.default.attributesOfItem(atPath: directory + "/space-reserve")
            #expect((reserveFile[.size] as? Int) == reserve, "the reserve was not retaken once space was free")
            #expect(try reopened.checkConsistency().isClean)
            #expect(try reopened.listVolumes(after: nil, limit: 0).items.map(\.name) == ["snapshotted"])
        }
    }

    // MARK: - Helpers

    /// Writes `path` until the filesystem has no block left; returns the bytes written.
    static func fillCompletely(_ path: String) -> Int {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { return 0 }
        defer { close(descriptor) }
        var total = 0
        for size in [1 << 20, 4096, 512] {
            let chunk = [UInt8](repeating: 0xA5, count: size)
            while chunk.withUnsafeBytes({ Glibc.write(descriptor, $0.baseAddress, size) }) == size { total += size }
        }
        fsync(descriptor)
        return total
    }

    static func write(_ data: [UInt8], to handle: VolumeHandle, flush: Bool, close: Bool = true) throws {
        for offset in stride(from: 0, to: data.count, by: chunk) {
            try data[offset..<min(offset + chunk, data.count)].withUnsafeBytes { try handle.write($0, at: UInt64(offset)) }
        }
        if flush { try handle.flush() }
        if close { try handle.close() }
    }

    static func read(_ volumeID: String, bytes: Int, from store: BlockStore) throws -> [UInt8] {
        let handle = try store.open(volumeID: volumeID)
        defer { try? handle.close() }
        var result = [UInt8](repeating: 0, count: bytes)
        try result.withUnsafeMutableBytes { try handle.read(into: $0, at: 0) }
        return result
    }

    static func deleteVolumes(named prefix: String, through driver: InProcessDriver) throws {
        let store = try driver.store
        for volume in try store.listVolumes(after: nil, limit: 0).items where volume.name.hasPrefix(prefix) {
            for snapshot in try store.listSnapshots(after: nil, limit: 0, sourceVolumeID: volume.id).items {
                try store.deleteSnapshot(id: snapshot.id)
            }
            try store.deleteVolume(id: volume.id)
        }
        for snapshot in try store.listSnapshots(after: nil, limit: 0).items where snapshot.name.hasPrefix(prefix) {
            try store.deleteSnapshot(id: snapshot.id)
        }
    }
}
