import Foundation
import GRDB
import StrataTestSupport
import Testing
@testable import BlockStore

/// Copying snapshots between stores through the export and import interface, as the peer
/// service does between nodes (without the network).
@Suite(.blockingTolerant) struct ReplicationTests {
    /// Copies a snapshot of `source` into `target` through the public interface; `stopAfter`
    /// extents of the first missing layer cuts the copy (returns the unfinished import).
    @discardableResult
    static func replicate(_ snapshotID: String, from source: BlockStore, to target: BlockStore, origin: String = "node-a",
                          stopAfter: Int? = nil) throws -> (fetched: UInt64, layers: Int, unfinished: ReplicaImport?) {
        let manifest = try source.replicaManifest(snapshotID: snapshotID)
        guard let replica = try target.beginReplicaImport(manifest, originNode: origin) else { return (0, 0, nil) }
        var fetched: UInt64 = 0
        for layer in replica.missingLayers {
            let export = try source.exportLayer(snapshotID: snapshotID, layerUUID: layer.uuid)
            try replica.beginLayer(layer.uuid)
            for (number, extent) in try export.extents(maximumLength: 256 << 10).enumerated() {
                if let stopAfter, number == stopAfter { return (fetched, replica.missingLayers.count, replica) }
                var bytes = [UInt8](repeating: 0, count: extent.isZero ? 0 : Int(extent.length))
                try bytes.withUnsafeMutableBytes { try export.read(into: $0, at: extent.offset) }
                try bytes.withUnsafeBytes { try replica.write(layer: layer.uuid, extent: extent, bytes: $0) }
                fetched += UInt64(bytes.count)
            }
            try replica.finishLayer(layer.uuid)
        }
        try replica.commit()
        return (fetched, replica.missingLayers.count, nil)
    }

    /// A volume of 4 MiB with 64 KiB clusters: whole clusters, single 4 KiB subclusters and a
    /// discarded range, snapshotted twice (s1 below s2).
    struct Origin {
        let store: BlockStore
        let volume: Volume
        let s1: Snapshot
        let s2: Snapshot
        let s1Contents: [UInt8]
        let s2Contents: [UInt8]

        init(_ store: BlockStore) throws {
            self.store = store
            volume = try store.createVolume(name: "golden", size: 4 << 20, clusterSize: 65536)
            let handle = try store.open(volumeID: volume.id)
            try handle.write(pattern(seed: 1, count: 300_000), at: 0)
            try handle.write(pattern(seed: 2, count: 4096), at: 1 << 20)
            try handle.write(pattern(seed: 3, count: 8192), at: (2 << 20) + 12288)
            try handle.flush()
            s1 = try store.createSnapshot(name: "s1", of: volume.id)
            try handle.write(pattern(seed: 4, count: 4096), at: 8192)
            try handle.discard(at: 131_072, length: 65536)
            try handle.write(pattern(seed: 5, count: 70_000), at: 3 << 20)
            try handle.flush()
            try handle.close()
            s2 = try store.createSnapshot(name: "s2", of: volume.id)
            s1Contents = try store.contents(ofSnapshot: s1.id)
            s2Contents = try store.contents(ofSnapshot: s2.id)
        }
    }

    @Test("A volume adopted from a replica past the soft depth limit is flattened in the background and keeps its data")
    func adoptedDeepVolumeIsFlattened() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let source = try BlockStore(directory: a.path, options: testOptions())
        defer { source.close() }
        let origin = try Origin(source)
        let target = try BlockStore(directory: b.path, options: testOptions(soft: 2, background: true))
        defer { target.close() }
        try Self.replicate(origin.s2.id, from: source, to: target)
        let adopted = try target.createVolumeFromReplica(
            name: "golden", size: origin.volume.size, replicaID: origin.s2.id, recordedSource: nil, multiNode: true,
            adopting: AdoptedVolume(volumeID: origin.volume.id, epoch: 2))
        #expect(adopted.chainDepth > 2, "the adopted chain starts past the soft limit (depth \(adopted.chainDepth))")
        target.waitForBackgroundWork()
        let flattened = try target.volume(id: origin.volume.id)
        #expect(flattened.chainDepth == 1, "depth \(flattened.chainDepth) after the background flatten")
        #expect(flattened.epoch == 2)
        #expect(try target.contents(ofVolume: origin.volume.id) == origin.s2Contents)
    }

    static func layerFileCount(_ directory: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: directory + "/layers").filter { $0.hasPrefix("layer-") }.count
    }

    @Test func aCloneOverAnImportedChainReadsByteExactAndWritesStayLocal() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        let target = try BlockStore(directory: b.path, options: testOptions())
        let copy = try Self.replicate(origin.s2.id, from: origin.store, to: target)
        #expect(copy.layers == 2)
        // Only allocated bytes travel: never the 4 MiB of the volume.
        let manifest = try origin.store.replicaManifest(snapshotID: origin.s2.id)
        #expect(copy.fetched == manifest.allocatedBytes)
        #expect(copy.fetched < 600_000)

        let replica = try target.snapshot(id: origin.s2.id)
        #expect(replica.originNode == "node-a")
        #expect(replica.size == origin.s2.size)
        #expect(try target.listSnapshots(after: nil, limit: 0).items.isEmpty, "a replica is not listed as a snapshot of this node")
        let clone = try target.createVolume(name: "vm-1", size: 4 << 20, source: .snapshot(id: origin.s2.id))
        #expect(try target.contents(ofVolume: clone.id) == origin.s2Contents)

        let handle = try target.open(volumeID: clone.id)
        try handle.write(pattern(seed: 9, count: 4096), at: 8192)
        try handle.close()
        let sibling = try target.createVolume(name: "vm-2", size: 4 << 20, source: .snapshot(id: origin.s2.id))
        #expect(try target.contents(ofVolume: sibling.id) == origin.s2Contents)
        #expect(try origin.store.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)
        #expect(try target.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)

        let census = try target.census()
        #expect(census.importedLayers == 2)
        #expect(census.replicaSnapshots == 1)
        #expect(census.snapshots == 0)
        #expect(census.importedBytes == manifest.allocatedBytes)
        #expect(try target.checkConsistency().isClean)
        // A second copy of the same snapshot has nothing to do.
        #expect(try target.beginReplicaImport(manifest, originNode: "node-a") == nil)
    }

    /// An import writes 4 KiB-aligned extents past the page cache (direct I/O) and the rest
    /// through it: with 16 KiB clusters a layer holds 1 KiB subclusters, so one layer mixes both.
    @Test("A layer of whole clusters and 1 KiB pieces, written directly and through the page cache, reads back byte-exact")
    func importsMixingDirectAndBufferedWritesReadBack() throws {
        let a = try TemporaryDirectory(.disk), b = try TemporaryDirectory(.disk)
        let source = try BlockStore(directory: a.path, options: testOptions())
        let volume = try source.createVolume(name: "small-clusters", size: 1 << 20, clusterSize: 16384)
        let handle = try source.open(volumeID: volume.id)
        try handle.write(pattern(seed: 11, count: 1024), at: 1024)          // one subcluster
        try handle.write(pattern(seed: 12, count: 49152), at: 65536)        // three whole clusters
        try handle.write(pattern(seed: 13, count: 3072), at: 200_704)       // three subclusters
        try handle.write(pattern(seed: 14, count: 16384 + 2048), at: 524_288)
        try handle.flush()
        try handle.close()
        let snapshot = try source.createSnapshot(name: "mixed", of: volume.id)
        let expected = try source.contents(ofSnapshot: snapshot.id)

        let target = try BlockStore(directory: b.path, options: testOptions())
        let copy = try Self.replicate(snapshot.id, from: source, to: target)
        #expect(copy.layers == 1)
        #expect(try target.contents(ofSnapshot: snapshot.id) == expected)
        let clone = try target.createVolume(name: "clone", size: 1 << 20, source: .snapshot(id: snapshot.id))
        #expect(try target.contents(ofVolume: clone.id) == expected)
        #expect(try target.checkConsistency().isClean)
    }

    @Test func layersAlreadyHereAreSharedNotFetchedAgain() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        let target = try BlockStore(directory: b.path, options: testOptions())
        let first = try Self.replicate(origin.s1.id, from: origin.store, to: target)
        #expect(first.layers == 1)
        let second = try Self.replicate(origin.s2.id, from: origin.store, to: target)
        #expect(second.layers == 1, "the bottom layer of s2 is s1's, already here")
        let manifest = try origin.store.replicaManifest(snapshotID: origin.s2.id)
        #expect(second.fetched == manifest.layers[1].allocatedBytes)
        #expect(try target.census().importedLayers == 2)
        #expect(try target.contents(ofSnapshot: origin.s1.id) == origin.s1Contents)
        #expect(try target.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)
        #expect(try target.checkConsistency().isClean)

        // Dropping s1's replica keeps the layer s2 stands on.
        try target.dropReplica(snapshotID: origin.s1.id)
        #expect(try target.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)
        #expect(try target.census().importedLayers == 2)
        #expect(try target.checkConsistency().isClean)
    }

    @Test func aCutImportLeavesNothingWhetherDiscardedOrCrashed() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        var target: BlockStore? = try BlockStore(directory: b.path, options: testOptions())
        let before = try Self.layerFileCount(b.path)

        let discarded = try Self.replicate(origin.s2.id, from: origin.store, to: target!, stopAfter: 2)
        #expect(try Self.layerFileCount(b.path) > before)
        discarded.unfinished?.discard()
        #expect(try Self.layerFileCount(b.path) == before)
        #expect(throws: StoreError.self) { try target!.snapshot(id: origin.s2.id) }

        // A crash mid-copy: the import is never ended; its files have no catalog row.
        let crashed = try Self.replicate(origin.s2.id, from: origin.store, to: target!, stopAfter: 2)
        #expect(try Self.layerFileCount(b.path) > before)
        // Never deinitialized, as in a process that died: nothing of it runs again.
        _ = Unmanaged.passRetained(try #require(crashed.unfinished))
        target!.close()
        target = try BlockStore(directory: b.path, options: testOptions())
        #expect(try Self.layerFileCount(b.path) == before)
        #expect(try target!.checkConsistency().isClean)
        #expect(throws: StoreError.self) { try target!.snapshot(id: origin.s2.id) }

        // Committing with a layer not finished is refused and leaves nothing either.
        let manifest = try origin.store.replicaManifest(snapshotID: origin.s2.id)
        let partial = try #require(try target!.beginReplicaImport(manifest, originNode: "node-a"))
        try partial.beginLayer(manifest.layers[0].uuid)
        #expect(throws: StoreError.self) { try partial.commit() }
        #expect(try Self.layerFileCount(b.path) == before)

        // And the copy then succeeds from scratch.
        try Self.replicate(origin.s2.id, from: origin.store, to: target!)
        #expect(try target!.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)
    }

    @Test func copiedLayersAreFreedOnceTheReplicaAndEveryCloneAreGone() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        let target = try BlockStore(directory: b.path, options: testOptions())
        let empty = try Self.layerFileCount(b.path)
        try Self.replicate(origin.s2.id, from: origin.store, to: target)
        let clone = try target.createVolume(name: "vm", size: 4 << 20, source: .snapshot(id: origin.s2.id))
        #expect(try target.replicas() == [ReplicaRecord(snapshotID: origin.s2.id, originNode: "node-a", hidden: false)])
        try target.dropReplica(snapshotID: origin.s2.id)
        #expect(try target.contents(ofVolume: clone.id) == origin.s2Contents, "nothing a clone reads is freed")
        #expect(try target.census().importedLayers == 2)
        try target.deleteVolume(id: clone.id)
        #expect(try target.census().importedLayers == 0)
        #expect(try target.census().layers == 0)
        #expect(try Self.layerFileCount(b.path) == empty)
        #expect(try target.checkConsistency().isClean)
        #expect(throws: StoreError.self) { try target.dropReplica(snapshotID: origin.s2.id) }
        #expect(throws: StoreError.self) { try origin.store.dropReplica(snapshotID: origin.s1.id) }
    }

    @Test func aPeerCloneOfAVolumeTravelsThroughAHiddenSnapshot() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        let target = try BlockStore(directory: b.path, options: testOptions())
        let hidden = try origin.store.createPeerSnapshot(name: "peer:node-b:pvc-1", of: origin.volume.id)
        #expect(try origin.store.createPeerSnapshot(name: "peer:node-b:pvc-1", of: origin.volume.id).id == hidden.id)
        let volumeContents = try origin.store.contents(ofVolume: origin.volume.id)
        try Self.replicate(hidden.id, from: origin.store, to: target)
        try origin.store.releasePeerSnapshot(id: hidden.id)
        #expect(try origin.store.census().hiddenSnapshots == 0)

        let clone = try target.createVolumeFromReplica(
            name: "pvc-1", size: 4 << 20, replicaID: hidden.id, recordedSource: .volume(id: origin.volume.id))
        #expect(clone.source == .volume(id: origin.volume.id))
        #expect(try target.createVolumeFromReplica(
            name: "pvc-1", size: 4 << 20, replicaID: hidden.id, recordedSource: .volume(id: origin.volume.id)).id == clone.id)
        #expect(try target.contents(ofVolume: clone.id) == volumeContents)
        #expect(throws: StoreError.self) { try target.snapshot(id: hidden.id) }
        try target.deleteVolume(id: clone.id)
        #expect(try target.census().layers == 0, "the clone released its hidden replica")
        #expect(try target.checkConsistency().isClean)
        #expect(try origin.store.checkConsistency().isClean)
    }

    @Test func aStoreFromBeforeReplicationGivesEveryLayerAnIdentity() throws {
        let a = try TemporaryDirectory(.fast), b = try TemporaryDirectory(.fast)
        var store: BlockStore? = try BlockStore(directory: a.path, options: testOptions())
        let origin = try Origin(store!)
        store!.close()
        // Back to the v2 schema, as a store written before replication existed.
        let queue = try DatabaseQueue(path: a.path + "/catalog.sqlite")
        try queue.write { db in
            try db.execute(sql: """
                DROP INDEX layers_uuid; DROP INDEX snapshots_origin;
                ALTER TABLE layers DROP COLUMN uuid; ALTER TABLE layers DROP COLUMN imported;
                ALTER TABLE snapshots DROP COLUMN origin_node;
                DELETE FROM grdb_migrations WHERE identifier = 'v4-replication';
                """)
        }
        try queue.close()
        store = try BlockStore(directory: a.path, options: testOptions())
        let uuids = try store!.catalog.read { try $0.allLayers().map(\.uuid) }
        #expect(uuids.allSatisfy(LayerDescriptor.isValidUUID) && Set(uuids).count == uuids.count)
        #expect(try store!.checkConsistency().isClean)
        let target = try BlockStore(directory: b.path, options: testOptions())
        try Self.replicate(origin.s2.id, from: store!, to: target)
        #expect(try target.contents(ofSnapshot: origin.s2.id) == origin.s2Contents)
    }

    @Test func onlyFrozenLayersOfExistingSnapshotsAreExported() throws {
        let a = try TemporaryDirectory(.fast)
        let origin = try Origin(try BlockStore(directory: a.path, options: testOptions()))
        let store = origin.store
        let headLayer = try store.headLayerID(ofVolume: origin.volume.id)
        let headUUID = try store.catalog.read { try $0.requireLayer(headLayer).uuid }
        let s1Layer = try store.replicaManifest(snapshotID: origin.s1.id).layers[0].uuid
        let s2Top = try store.replicaManifest(snapshotID: origin.s2.id).layers[1].uuid
        #expect(throws: StoreError.self) { try store.exportLayer(snapshotID: origin.s2.id, layerUUID: headUUID) }
        #expect(throws: StoreError.self) { try store.exportLayer(snapshotID: origin.s1.id, layerUUID: s2Top) }
        #expect(throws: StoreError.self) { try store.replicaManifest(snapshotID: origin.volume.id) }
        for hostile in ["../\(s1Layer)", "snap-../../x", "", String(repeating: "a", count: 33), s1Layer.uppercased()] {
            #expect(throws: StoreError.self) { try store.exportLayer(snapshotID: origin.s1.id, layerUUID: hostile) }
            #expect(throws: StoreError.self) { try store.replicaManifest(snapshotID: hostile) }
        }
        #expect(try store.exportLayer(snapshotID: origin.s2.id, layerUUID: s1Layer).descriptor.uuid == s1Layer)
    }
}
