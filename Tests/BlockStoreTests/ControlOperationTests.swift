import Foundation
import GRDB
import StrataTestSupport
import Testing
@testable import BlockStore

/// Create, look up, list, expand and delete: idempotency, errors and accounting.
@Suite(.blockingTolerant) struct ControlOperationTests {
    func expectCode(_ code: StoreError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected \(code), nothing was thrown", sourceLocation: sourceLocation)
        } catch {
            #expect(StoreError.Code.of(error) == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func createVolumeIsIdempotentByName() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "pvc-1", size: 1 << 30, parameters: ["fs": "ext4"])
        #expect(volume.id.hasPrefix("vol-"))
        #expect(volume.clusterSize == 65536)
        #expect(volume.chainDepth == 1)
        #expect(try store.createVolume(name: "pvc-1", size: 1 << 30, parameters: ["fs": "ext4"]) == volume)
        #expect(try store.createVolume(name: "pvc-1", size: 1 << 30, clusterSize: 65536, parameters: ["fs": "ext4"]) == volume)
        expectCode(.alreadyExists) { _ = try store.createVolume(name: "pvc-1", size: 2 << 30, parameters: ["fs": "ext4"]) }
        expectCode(.alreadyExists) { _ = try store.createVolume(name: "pvc-1", size: 1 << 30, parameters: [:]) }
        expectCode(.alreadyExists) { _ = try store.createVolume(name: "pvc-1", size: 1 << 30, clusterSize: 4096, parameters: ["fs": "ext4"]) }
        #expect(try store.volume(id: volume.id) == volume)
        #expect(try store.volume(named: "pvc-1") == volume)
        #expect(try store.volume(named: "nope") == nil)
        #expect(try store.layerCount() == 1)
    }

    @Test func invalidArgumentsAndUnknownIDs() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        expectCode(.invalidArgument) { _ = try store.createVolume(name: "", size: 1) }
        expectCode(.invalidArgument) { _ = try store.createVolume(name: "a", size: 0) }
        for bad: UInt32 in [0, 2048, 4097, 3 << 12, 2 << 20] {
            expectCode(.invalidArgument) { _ = try store.createVolume(name: "a", size: 1 << 20, clusterSize: bad) }
        }
        expectCode(.outOfRange) { _ = try store.createVolume(name: "a", size: UInt64(1) << 62, clusterSize: 4096) }
        let unknownVolume = "vol-" + UUID().uuidString.lowercased()
        let unknownSnapshot = "snap-" + UUID().uuidString.lowercased()
        for malformed in ["", "../../etc/passwd", unknownVolume.uppercased(), "vol-1234", unknownSnapshot, unknownVolume + "x"] {
            expectCode(.notFound) { _ = try store.volume(id: malformed) }
            expectCode(.notFound) { try store.deleteVolume(id: malformed) }
            expectCode(.notFound) { _ = try store.open(volumeID: malformed) }
            expectCode(.notFound) { _ = try store.expandVolume(id: malformed, to: 10) }
            expectCode(.notFound) { _ = try store.createSnapshot(name: "s", of: malformed) }
            expectCode(.notFound) { try store.flatten(volumeID: malformed) }
        }
        expectCode(.notFound) { _ = try store.volume(id: unknownVolume) }
        expectCode(.notFound) { _ = try store.snapshot(id: unknownSnapshot) }
        expectCode(.notFound) { _ = try store.snapshot(id: unknownVolume) }
        expectCode(.notFound) { try store.deleteSnapshot(id: unknownSnapshot) }
        expectCode(.notFound) { _ = try store.createVolume(name: "c", size: 1, source: .snapshot(id: unknownSnapshot)) }
        expectCode(.notFound) { _ = try store.createVolume(name: "c", size: 1, source: .volume(id: unknownVolume)) }
        expectCode(.invalidArgument) { _ = try store.listVolumes(after: "abc", limit: 1) }
        expectCode(.invalidArgument) { _ = try store.listSnapshots(after: "-1", limit: 1) }
        #expect(try store.checkConsistency().isClean)
        #expect(try store.layerCount() == 0)
    }

    @Test func createSnapshotIsIdempotentByName() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let first = try store.createVolume(name: "a", size: 1 << 20)
        let second = try store.createVolume(name: "b", size: 1 << 20)
        let snapshot = try store.createSnapshot(name: "snap", of: first.id)
        #expect(snapshot.id.hasPrefix("snap-"))
        #expect(snapshot.sourceVolumeID == first.id)
        #expect(snapshot.size == 1 << 20)
        #expect(try store.createSnapshot(name: "snap", of: first.id) == snapshot)
        expectCode(.alreadyExists) { _ = try store.createSnapshot(name: "snap", of: second.id) }
        #expect(try store.snapshot(id: snapshot.id) == snapshot)
        #expect(try store.snapshot(named: "snap") == snapshot)
        // The idempotent repeat did not freeze another layer.
        #expect(try store.volume(id: first.id).chainDepth == 2)
    }

    @Test func cloneRequestsAreCheckedAgainstTheirSource() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let base = try store.createVolume(name: "base", size: 1 << 20, clusterSize: 16384)
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        expectCode(.outOfRange) { _ = try store.createVolume(name: "c", size: 1000, source: .snapshot(id: snapshot.id)) }
        expectCode(.invalidArgument) {
            _ = try store.createVolume(name: "c", size: 1 << 20, clusterSize: 65536, source: .snapshot(id: snapshot.id))
        }
        expectCode(.outOfRange) { _ = try store.createVolume(name: "c", size: 1000, source: .volume(id: base.id)) }
        let clone = try store.createVolume(name: "c", size: 1 << 21, source: .snapshot(id: snapshot.id))
        #expect(clone.clusterSize == 16384)
        #expect(clone.source == .snapshot(id: snapshot.id))
        #expect(try store.createVolume(name: "c", size: 1 << 21, source: .snapshot(id: snapshot.id)) == clone)
        #expect(try store.createVolume(name: "c", size: 1 << 21, clusterSize: 16384, source: .snapshot(id: snapshot.id)) == clone)
        expectCode(.alreadyExists) { _ = try store.createVolume(name: "c", size: 1 << 21, source: .volume(id: base.id)) }
        expectCode(.alreadyExists) { _ = try store.createVolume(name: "c", size: 1 << 21) }
        #expect(try store.checkConsistency().isClean)
    }

    @Test(arguments: [1, 2, 3, 7, 0])
    func listingPagesThroughEverythingOnce(limit: Int) throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        var ids: [String] = []
        for number in 0..<7 { ids.append(try store.createVolume(name: "v\(number)", size: 1 << 20).id) }
        try store.deleteVolume(id: ids.remove(at: 3))
        var seen: [String] = []
        var cursor: String?
        repeat {
            let page = try store.listVolumes(after: cursor, limit: limit)
            if limit > 0 { #expect(page.items.count <= limit) }
            seen += page.items.map(\.id)
            cursor = page.nextCursor
        } while cursor != nil
        #expect(seen == ids)

        var snapshots: [String] = []
        for (number, id) in ids.enumerated() { snapshots.append(try store.createSnapshot(name: "s\(number)", of: id).id) }
        _ = try store.createVolume(name: "hidden-source", size: 1 << 20, source: .volume(id: ids[0]))
        seen = []
        cursor = nil
        repeat {
            let page = try store.listSnapshots(after: cursor, limit: limit)
            seen += page.items.map(\.id)
            cursor = page.nextCursor
        } while cursor != nil
        #expect(seen == snapshots)
        #expect(try store.listSnapshots(after: nil, limit: 0, sourceVolumeID: ids[2]).items.map(\.id) == [snapshots[2]])
    }

    @Test func deletingAnOpenVolumeIsBusy() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20)
        let handle = try store.open(volumeID: volume.id)
        expectCode(.busy) { try store.deleteVolume(id: volume.id) }
        try handle.close()
        try store.deleteVolume(id: volume.id)
        expectCode(.notFound) { try store.deleteVolume(id: volume.id) }
        expectCode(.notFound) { _ = try store.open(volumeID: volume.id) }
    }

    @Test func aSecondStoreOnTheSameDirectoryIsBusy() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        expectCode(.busy) { _ = try BlockStore(directory: directory.path, options: testOptions()) }
        store.close()
        let again = try BlockStore(directory: directory.path, options: testOptions())
        again.close()
    }

    @Test func snapshotGroupsShareOnePointInTime() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volumes = try (0..<3).map { try store.createVolume(name: "v\($0)", size: 1 << 16) }
        let handles = try volumes.map { try store.open(volumeID: $0.id) }
        for (number, handle) in handles.enumerated() { try handle.write([UInt8(number + 1)], at: 0) }
        let requests = volumes.enumerated().map { (name: "g-\($0.offset)", volumeID: $0.element.id) }
        let group = try store.createSnapshots(requests, groupID: "group-1")
        for handle in handles { try handle.write([99], at: 0) }
        #expect(group.map(\.groupID) == ["group-1", "group-1", "group-1"])
        #expect(Set(group.map(\.createdAt)).count == 1)
        for (number, snapshot) in group.enumerated() {
            #expect(try store.contents(ofSnapshot: snapshot.id).first == UInt8(number + 1))
        }
        #expect(try store.createSnapshots(requests, groupID: "group-1") == group)
        expectCode(.alreadyExists) {
            _ = try store.createSnapshots([(name: "g-0", volumeID: volumes[0].id), (name: "fresh", volumeID: volumes[1].id)], groupID: "x")
        }
        expectCode(.invalidArgument) {
            _ = try store.createSnapshots([(name: "a", volumeID: volumes[0].id), (name: "b", volumeID: volumes[0].id)], groupID: "x")
        }
        for handle in handles { try handle.close() }
        #expect(try store.snapshots(inGroup: "group-1").map(\.id) == group.map(\.id))
        #expect(try store.groupSnapshots(namePrefix: "g-").map(\.id) == group.map(\.id))
        // Looking a group up reads its members only, not every snapshot.
        let plan = try store.catalog.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT * FROM snapshots WHERE group_id = ? AND hidden = 0 ORDER BY seq",
                             arguments: ["group-1"]).map { $0["detail"] as String }
        }
        #expect(plan.contains { $0.contains("snapshots_group") }, "\(plan)")
        #expect(try store.checkConsistency().isClean)
    }

    @Test func accountingFollowsWritesSnapshotsAndDeletes() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 1 << 20, clusterSize: 65536)
        let other = try store.createVolume(name: "w", size: 3 << 20)
        let handle = try store.open(volumeID: volume.id)
        try handle.write(pattern(seed: 1, count: 65536 * 3), at: 100)  // touches 4 clusters
        #expect(try store.volume(id: volume.id).allocatedBytes == 4 * 65536)
        let snapshot = try store.createSnapshot(name: "s", of: volume.id)
        #expect(snapshot.allocatedBytes == 4 * 65536)
        #expect(try store.volume(id: volume.id).allocatedBytes == 0)
        try handle.write([1], at: 0)  // copy-up of one 4 KiB subcluster
        #expect(try store.volume(id: volume.id).allocatedBytes == 4096)
        try handle.write(pattern(seed: 2, count: 65536), at: 65536)  // covers a cluster: no copy-up
        #expect(try store.volume(id: volume.id).allocatedBytes == 4096 + 65536)
        try handle.close()
        let capacity = try store.capacity()
        #expect(capacity.allocatedBytes == 5 * 65536 + 4096)
        #expect(capacity.provisionedBytes == (1 << 20) + (3 << 20))
        #expect(capacity.totalBytes > 0 && capacity.freeBytes <= capacity.totalBytes)
        try store.deleteVolume(id: other.id)
        #expect(try store.capacity().provisionedBytes == 1 << 20)
    }

    @Test func censusCountsWhatTheStoreHolds() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try store.census() == StoreCensus(
            volumes: 0, snapshots: 0, hiddenSnapshots: 0, layers: 0, allocatedBytes: 0, provisionedBytes: 0, deepestChain: 0))
        let base = try store.createVolume(name: "base", size: 1 << 20, clusterSize: 65536)
        let handle = try store.open(volumeID: base.id)
        try handle.write(pattern(seed: 3, count: 65536), at: 0)
        try handle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "clone", size: 2 << 20, source: .snapshot(id: snapshot.id))
        let copy = try store.createVolume(name: "copy", size: 2 << 20, source: .volume(id: clone.id))  // through a hidden snapshot
        try store.deleteSnapshot(id: snapshot.id)  // gone, but its layer stays: the clone reads it
        let census = try store.census()
        #expect(census.volumes == 3 && census.snapshots == 0 && census.hiddenSnapshots == 1)
        let layerCount = try store.layerCount()
        #expect(census.layers == 5 && census.layers == layerCount)
        #expect(census.allocatedBytes == (try store.capacity().allocatedBytes) && census.allocatedBytes == 65536)
        #expect(census.provisionedBytes == (1 << 20) + (2 << 20) + (2 << 20))
        let depths = try [base, clone, copy].map { try store.volume(id: $0.id).chainDepth }
        #expect(census.deepestChain == depths.max() && census.deepestChain > 2)
    }

    @Test func anUnwrittenCloneOfATebibyteVolumeCostsAFewKilobytes() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let tebibyte: UInt64 = 1 << 40
        let base = try store.createVolume(name: "big", size: tebibyte)
        let handle = try store.open(volumeID: base.id)
        try handle.write([1, 2, 3], at: tebibyte - 3)
        try handle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "clone", size: tebibyte, source: .snapshot(id: snapshot.id))
        let head = try store.headLayerID(ofVolume: clone.id)
        let layers = store.layerDirectory
        func headFilesUsage() throws -> UInt64 {
            var used: UInt64 = 0
            for path in [layers.dataPath(head), layers.mapPath(head)] where SystemDirectory.fileExists(path) {
                let file = try SystemFile.open(path, readOnly: true)
                used += try file.diskUsage()
                file.close()
            }
            return used
        }
        // Until it is opened the clone is only catalog rows; opened, a header block.
        #expect(!layers.layerExists(head))
        let cloneHandle = try store.open(volumeID: clone.id)
        #expect(layers.layerExists(head))
        #expect(try headFilesUsage() <= 16 * 1024)
        #expect(try cloneHandle.read(count: 3, at: tebibyte - 3) == [1, 2, 3])
        try cloneHandle.close()
        #expect(try headFilesUsage() <= 16 * 1024)
    }

    @Test func theHardDepthLimitStopsDeeperChains() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions(soft: 100, hard: 4))
        let volume = try store.createVolume(name: "v", size: 1 << 16)
        var snapshots: [Snapshot] = []
        for number in 0..<3 { snapshots.append(try store.createSnapshot(name: "s\(number)", of: volume.id)) }
        #expect(try store.volume(id: volume.id).chainDepth == 4)
        expectCode(.chainDepthLimit) { _ = try store.createSnapshot(name: "s3", of: volume.id) }
        expectCode(.chainDepthLimit) { _ = try store.createVolume(name: "c", size: 1 << 16, source: .volume(id: volume.id)) }
        // A clone of the newest snapshot is exactly at the limit: allowed, but it cannot be snapshotted.
        let deepClone = try store.createVolume(name: "deep", size: 1 << 16, source: .snapshot(id: snapshots[2].id))
        #expect(deepClone.chainDepth == 4)
        expectCode(.chainDepthLimit) { _ = try store.createSnapshot(name: "deep-s", of: deepClone.id) }
        #expect(try store.createVolume(name: "shallow", size: 1 << 16, source: .snapshot(id: snapshots[0].id)).chainDepth == 2)
        try store.flatten(volumeID: volume.id)
        #expect(try store.volume(id: volume.id).chainDepth == 1)
        _ = try store.createSnapshot(name: "s3", of: volume.id)
        #expect(try store.checkConsistency().isClean)
    }
}
