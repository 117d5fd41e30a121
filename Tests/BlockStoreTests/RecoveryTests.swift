import Foundation
import GRDB
import StrataTestSupport
import Testing
@testable import BlockStore

/// The reconcile at open and what `checkConsistency` reports.
@Suite(.blockingTolerant) struct RecoveryTests {
    @Test func layerFilesWithoutACatalogRowAreCollectedAtOpen() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        try store.layerDirectory.createLayer(999, clusterSize: 65536)
        let report = try store.checkConsistency()
        #expect(report.orphanFiles == ["layer-00000000000003e7.data", "layer-00000000000003e7.map"])
        #expect(!report.isClean)
        store.close()
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.checkConsistency().isClean)
        #expect(!reopened.layerDirectory.layerExists(999))
        #expect(try reopened.volume(id: volume.id).name == "v")
    }

    @Test func aCatalogRowWhoseFileIsMissingIsReportedNotDropped() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let handle = try store.open(volumeID: volume.id)
        try handle.write([1], at: 0)
        try handle.close()
        let head = try store.headLayerID(ofVolume: volume.id)
        let layers = store.layerDirectory
        store.close()
        let moved = layers.dataPath(head) + ".moved"
        #expect(rename(layers.dataPath(head), moved) == 0)
        do {
            _ = try BlockStore(directory: directory.path, options: testOptions())
            Issue.record("a store with a missing layer file opened")
        } catch {
            #expect(StoreError.Code.of(error) == .corrupt)
        }
        #expect(rename(moved, layers.dataPath(head)) == 0)
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.volume(id: volume.id).name == "v")
        #expect(try reopened.checkConsistency().isClean)
    }

    @Test func filesOfALayerTheCatalogSaysHasNoneAreRemovedAtOpen() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let head = try store.headLayerID(ofVolume: volume.id)
        // A crash after creating the files of a new head, before the catalog recorded them.
        try store.layerDirectory.createLayer(head, clusterSize: 65536)
        #expect(try store.checkConsistency().orphanFiles.count == 2)
        store.close()
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(!reopened.layerDirectory.layerExists(head))
        #expect(try reopened.checkConsistency().isClean)
        #expect(try reopened.contents(ofVolume: volume.id) == [UInt8](repeating: 0, count: 1 << 20))
    }

    @Test func aDirtyMapIsRecoveredAndUnmappedDataIsPunchedOut() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20, clusterSize: 65536)
        let handle = try store.open(volumeID: volume.id)
        let kept = pattern(seed: 40, count: 65536)
        try handle.write(kept, at: 0)
        try handle.close()
        let head = try store.headLayerID(ofVolume: volume.id)
        let layers = store.layerDirectory
        store.close()

        // What a crash leaves: a dirty map and data of a write no flush acknowledged.
        let files = try layers.openLayer(head, writable: true)
        try files.map.setDirty(true, boot: previousBoot)  // and a reboot since
        let garbage = [UInt8](repeating: 0xAB, count: 65536)
        try garbage.withUnsafeBytes { try files.data.write($0, at: 65536 * 5) }
        files.close()

        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.checkConsistency().isClean)
        let again = try reopened.open(volumeID: volume.id)
        #expect(try again.read(count: 65536, at: 0) == kept)
        #expect(try again.read(count: 65536, at: 65536 * 5) == [UInt8](repeating: 0, count: 65536))
        // A partial write into that cluster must not resurrect the garbage around it.
        try again.write([1], at: 65536 * 5 + 10)
        var expected = [UInt8](repeating: 0, count: 65536)
        expected[10] = 1
        #expect(try again.read(count: 65536, at: 65536 * 5) == expected)
        #expect(try reopened.volume(id: volume.id).allocatedBytes == 2 * 65536)
        try again.close()
    }

    @Test func checkConsistencyReportsReferenceMismatchesAndBrokenRows() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let snapshot = try store.createSnapshot(name: "s", of: volume.id)
        let frozen = try store.layerID(ofSnapshot: snapshot.id)
        try store.catalog.write { db in
            try db.execute(sql: "UPDATE layers SET ref_count = 7 WHERE id = ?", arguments: [frozen])
        }
        var report = try store.checkConsistency()
        #expect(report.referenceMismatches == [.init(layerID: frozen, recorded: 7, expected: 2)])
        try store.catalog.write { db in
            try db.execute(sql: "UPDATE layers SET ref_count = 2 WHERE id = ?", arguments: [frozen])
            try db.execute(sql: "UPDATE layers SET frozen = 0 WHERE id = ?", arguments: [frozen])
        }
        report = try store.checkConsistency()
        #expect(report.referenceMismatches.isEmpty)
        #expect(report.brokenReferences.count == 2)  // snapshot on a writable layer, a parent not frozen
        try store.catalog.write { db in
            try db.execute(sql: "UPDATE layers SET frozen = 1 WHERE id = ?", arguments: [frozen])
        }
        #expect(try store.checkConsistency().isClean)
    }

    @Test func anOpenStoreRefusesWorkAfterClose() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let handle = try store.open(volumeID: volume.id)
        try handle.write([1], at: 0)
        store.close()
        #expect(throws: StoreError.self) { try handle.write([2], at: 0) }
        #expect(throws: StoreError.self) { try store.createVolume(name: "w", size: 1) }
        let reopened = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try reopened.contents(ofVolume: volume.id).first == 1)
    }
}
