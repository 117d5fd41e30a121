import Foundation
import GRDB
import StrataTestSupport
import Testing
@testable import BlockStore

/// Multi-node volumes in the store: the flag is part of a volume's identity, other nodes that
/// stage one are remembered across a reopen, and a volume some node stages is never deleted.
@Suite(.blockingTolerant) struct SharingTests {
    @Test func multiNodeIsPartOfTheVolumeAndOfIdempotency() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let shared = try store.createVolume(name: "vm-disk", size: 8 << 20, multiNode: true)
        #expect(shared.multiNode && shared.epoch == 1)
        #expect(try store.createVolume(name: "vm-disk", size: 8 << 20, multiNode: true).id == shared.id)
        #expect(throws: StoreError.self, "the same name as a single-node volume is another volume") {
            try store.createVolume(name: "vm-disk", size: 8 << 20)
        }
        let snapshot = try store.createSnapshot(name: "s", of: shared.id)
        let clone = try store.createVolume(name: "clone", size: 8 << 20, source: .snapshot(id: snapshot.id), multiNode: true)
        #expect(try store.volume(id: clone.id).multiNode)
        let volumeClone = try store.createVolume(name: "of-volume", size: 8 << 20, source: .volume(id: shared.id))
        #expect(!volumeClone.multiNode, "sharing is asked per volume, not inherited")
        #expect(try store.checkConsistency().isClean)
    }

    @Test func remoteStagersSurviveAReopenAndBlockDeletion() throws {
        let directory = try TemporaryDirectory(.fast)
        var store: BlockStore? = try BlockStore(directory: directory.path, options: testOptions())
        let shared = try store!.createVolume(name: "vm-disk", size: 8 << 20, multiNode: true)
        let single = try store!.createVolume(name: "rwo", size: 8 << 20)
        #expect(throws: StoreError.self, "a single-node volume is staged only where it lives") {
            try store!.addRemoteStager("node-b", toVolume: single.id)
        }
        try store!.addRemoteStager("node-b", toVolume: shared.id)
        try store!.addRemoteStager("node-b", toVolume: shared.id)
        try store!.addRemoteStager("node-c", toVolume: shared.id)
        #expect(try store!.remoteStagers(ofVolume: shared.id) == ["node-b", "node-c"])
        store!.close()
        store = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try store!.remoteStagers(ofVolume: shared.id) == ["node-b", "node-c"])
        do {
            try store!.deleteVolume(id: shared.id)
            Issue.record("a volume other nodes stage was deleted")
        } catch let error as StoreError {
            #expect(error.code == .busy && error.message.contains("node-b"))
        }
        try store!.removeRemoteStager("node-b", fromVolume: shared.id)
        try store!.removeRemoteStager("node-b", fromVolume: shared.id)
        try store!.removeRemoteStager("node-c", fromVolume: shared.id)
        try store!.deleteVolume(id: shared.id)
        #expect(throws: StoreError.self) { try store!.remoteStagers(ofVolume: shared.id) }
        #expect(try store!.checkConsistency().isClean)
    }

    @Test func aStoreFromBeforeSharingOpensWithSingleNodeVolumes() throws {
        let directory = try TemporaryDirectory(.fast)
        var store: BlockStore? = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store!.createVolume(name: "old", size: 8 << 20)
        store!.close()
        let queue = try DatabaseQueue(path: directory.path + "/catalog.sqlite")
        try queue.write { db in
            try db.execute(sql: """
                DROP TABLE remote_stagers;
                ALTER TABLE volumes DROP COLUMN multi_node; ALTER TABLE volumes DROP COLUMN epoch;
                ALTER TABLE volumes DROP COLUMN moved_to;
                DELETE FROM grdb_migrations WHERE identifier = 'v5-sharing';
                """)
        }
        try queue.close()
        store = try BlockStore(directory: directory.path, options: testOptions())
        let reopened = try store!.volume(id: volume.id)
        #expect(!reopened.multiNode && reopened.epoch == 1)
        #expect(try store!.remoteStagers(ofVolume: volume.id).isEmpty)
    }
}
