@testable import BlockStore
import StrataTestSupport
import Testing

/// Copy-up per subcluster: a small write into an inherited cluster copies only the 4 KiB pieces
/// it touches, and the rest of the cluster keeps coming from below, at any depth, across
/// reopen, crash recovery, discard and flatten.
@Suite(.blockingTolerant) struct SubclusterTests {
    static let cluster = 65536
    static let subcluster = 4096

    /// A store with a volume whose first 4 clusters hold `base`, snapshotted, and a clone of it.
    struct Fixture {
        let directory: TemporaryDirectory
        let store: BlockStore
        let base: [UInt8]
        let snapshot: Snapshot
        let clone: Volume

        init(size: UInt64 = 1 << 20) throws {
            directory = try TemporaryDirectory(.fast)
            store = try BlockStore(directory: directory.path, options: testOptions())
            let volume = try store.createVolume(name: "base", size: size, clusterSize: UInt32(SubclusterTests.cluster))
            base = pattern(seed: 70, count: 4 * SubclusterTests.cluster)
            let handle = try store.open(volumeID: volume.id)
            try handle.write(base, at: 0)
            try handle.close()
            snapshot = try store.createSnapshot(name: "golden", of: volume.id)
            clone = try store.createVolume(name: "clone", size: size, source: .snapshot(id: snapshot.id))
        }

        func headDataUsage(of volumeID: String) throws -> UInt64 {
            let file = try SystemFile.open(store.layerDirectory.dataPath(try store.headLayerID(ofVolume: volumeID)), readOnly: true)
            defer { file.close() }
            return try file.diskUsage()
        }
    }

    @Test func aSmallWriteIntoAnInheritedClusterCopiesOnlyItsSubcluster() throws {
        let fixture = try Fixture()
        let store = fixture.store
        let sibling = try store.createVolume(name: "sibling", size: 1 << 20, source: .snapshot(id: fixture.snapshot.id))
        let handle = try store.open(volumeID: fixture.clone.id)
        let written = pattern(seed: 71, count: 100)
        try handle.write(written, at: 65536 + 5000)
        try handle.flush()

        var expected = fixture.base
        expected.replaceSubrange(65536 + 5000..<65536 + 5100, with: written)
        #expect(try handle.read(count: expected.count, at: 0) == expected)
        #expect(try store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.subcluster))
        #expect(try fixture.headDataUsage(of: fixture.clone.id) <= UInt64(Self.subcluster))
        #expect(try Array(store.contents(ofSnapshot: fixture.snapshot.id).prefix(expected.count)) == fixture.base)
        #expect(try Array(store.contents(ofVolume: sibling.id).prefix(expected.count)) == fixture.base)
        try handle.close()
    }

    @Test func subclustersFromManyLayersReadBackAcrossReopenAndFlatten() throws {
        let fixture = try Fixture()
        var store = fixture.store
        var expected = Array(fixture.base) + [UInt8](repeating: 0, count: (1 << 20) - fixture.base.count)
        var handle = try store.open(volumeID: fixture.clone.id)
        // Each layer of the chain takes a few subclusters of cluster 2, some unaligned, some
        // straddling two subclusters, one reaching into cluster 3.
        let writes: [(offset: Int, count: Int)] = [(131072, 4096), (131072 + 20480 + 7, 9000), (131072 + 61440 + 100, 8000),
                                                   (131072 + 4096 * 7, 1), (131072 + 4096 * 9 - 3, 6)]
        for (layer, write) in writes.enumerated() {
            let bytes = pattern(seed: 80 + UInt64(layer), count: write.count)
            try handle.write(bytes, at: UInt64(write.offset))
            expected.replaceSubrange(write.offset..<write.offset + write.count, with: bytes)
            #expect(try handle.read(count: 4 * Self.cluster, at: 0) == Array(expected[0..<4 * Self.cluster]), "after write \(layer)")
            _ = try store.createSnapshot(name: "s\(layer)", of: fixture.clone.id)
        }
        try handle.close()
        #expect(try store.volume(id: fixture.clone.id).chainDepth == writes.count + 2)
        store.close()

        store = try BlockStore(directory: fixture.directory.path, options: testOptions())
        #expect(try store.checkConsistency().isClean)
        handle = try store.open(volumeID: fixture.clone.id)
        #expect(try handle.readAll() == expected)
        // Every snapshot still shows the volume as it was when it was taken.
        var atSnapshot = Array(fixture.base) + [UInt8](repeating: 0, count: (1 << 20) - fixture.base.count)
        for (layer, write) in writes.enumerated() {
            atSnapshot.replaceSubrange(write.offset..<write.offset + write.count, with: pattern(seed: 80 + UInt64(layer), count: write.count))
            let snapshot = try #require(try store.listSnapshots(after: nil, limit: 0).items.first { $0.name == "s\(layer)" })
            #expect(try store.contents(ofSnapshot: snapshot.id) == atSnapshot, "snapshot s\(layer)")
        }
        try store.flatten(volumeID: fixture.clone.id)
        #expect(try handle.readAll() == expected)
        #expect(try store.volume(id: fixture.clone.id).chainDepth == 1)
        // Flattened: the head holds the four clusters the base wrote (cluster 2 and 3 complete).
        #expect(try store.volume(id: fixture.clone.id).allocatedBytes == UInt64(4 * Self.cluster))
        try handle.close()
        store.close()
        store = try BlockStore(directory: fixture.directory.path, options: testOptions())
        #expect(try store.contents(ofVolume: fixture.clone.id) == expected)
        #expect(try store.checkConsistency().isClean)
        store.close()
    }

    @Test func writingEverySubclusterGivesTheWholeClusterBackToTheHead() throws {
        let fixture = try Fixture()
        let handle = try fixture.store.open(volumeID: fixture.clone.id)
        var expected = Array(fixture.base[0..<Self.cluster])
        for subcluster in stride(from: 15, through: 0, by: -1) {
            let bytes = pattern(seed: 90 + UInt64(subcluster), count: 100)
            try handle.write(bytes, at: UInt64(subcluster * Self.subcluster + 50))
            expected.replaceSubrange(subcluster * Self.subcluster + 50..<subcluster * Self.subcluster + 150, with: bytes)
        }
        #expect(try handle.read(count: Self.cluster, at: 0) == expected)
        #expect(try fixture.store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.cluster))
        try handle.close()
        // The map says "whole cluster": with the snapshot's layer gone from under it, it still reads.
        let reopened = try fixture.store.open(volumeID: fixture.clone.id)
        #expect(try reopened.read(count: Self.cluster, at: 0) == expected)
        try reopened.close()
    }

    @Test func aWriteCoveringAMixedClusterReplacesItWhole() throws {
        let fixture = try Fixture()
        let handle = try fixture.store.open(volumeID: fixture.clone.id)
        try handle.write([9, 9], at: UInt64(Self.cluster + 3 * Self.subcluster))
        let whole = pattern(seed: 97, count: Self.cluster + 10)
        try handle.write(whole, at: UInt64(Self.cluster))
        var expected = fixture.base
        expected.replaceSubrange(Self.cluster..<2 * Self.cluster + 10, with: whole)
        #expect(try handle.read(count: expected.count, at: 0) == expected)
        // Cluster 1 whole, and the subcluster of cluster 2 the tail of the write reached.
        #expect(try fixture.store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.cluster + Self.subcluster))
        try handle.close()
        #expect(try fixture.store.contents(ofVolume: fixture.clone.id).prefix(expected.count) == expected[...])
    }

    @Test func discardingAPartialClusterHidesTheParentAndFreesTheSubclusters() throws {
        let fixture = try Fixture()
        let handle = try fixture.store.open(volumeID: fixture.clone.id)
        try handle.write([1, 2, 3], at: 10)
        try handle.write([4, 5, 6], at: 40000)
        #expect(try fixture.store.volume(id: fixture.clone.id).allocatedBytes == UInt64(2 * Self.subcluster))
        try handle.discard(at: 0, length: UInt64(Self.cluster))
        #expect(try handle.read(count: Self.cluster, at: 0) == [UInt8](repeating: 0, count: Self.cluster))
        #expect(try fixture.store.volume(id: fixture.clone.id).allocatedBytes == 0)
        // A part-cluster discard writes zeros, copying up only the subclusters it touches.
        try handle.discard(at: UInt64(Self.cluster + 4096), length: 100)
        var expected = Array(fixture.base[Self.cluster..<2 * Self.cluster])
        expected.replaceSubrange(4096..<4196, with: [UInt8](repeating: 0, count: 100))
        #expect(try handle.read(count: Self.cluster, at: UInt64(Self.cluster)) == expected)
        #expect(try fixture.store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.subcluster))
        try handle.close()
        #expect(try fixture.store.contents(ofSnapshot: fixture.snapshot.id).prefix(fixture.base.count) == fixture.base[...])
    }

    /// What a crash leaves in a head with partial clusters: a dirty map, subclusters written but
    /// never mapped. Recovery punches exactly those, so the parent shows through again.
    @Test func recoveryPunchesSubclustersTheMapDoesNotHold() throws {
        let fixture = try Fixture()
        let handle = try fixture.store.open(volumeID: fixture.clone.id)
        let kept = pattern(seed: 95, count: Self.subcluster)
        try handle.write(kept, at: UInt64(3 * Self.subcluster))
        try handle.close()
        let head = try fixture.store.headLayerID(ofVolume: fixture.clone.id)
        let layers = fixture.store.layerDirectory
        fixture.store.close()

        let files = try layers.openLayer(head, writable: true)
        try files.map.setDirty(true, boot: previousBoot)  // and a reboot since
        // Around the held subcluster (3), the rest of cluster 0; and a cluster of its own.
        let garbage = [UInt8](repeating: 0xAB, count: Self.cluster)
        try garbage[0..<3 * Self.subcluster].withUnsafeBytes { try files.data.write($0, at: 0) }
        try garbage[4 * Self.subcluster..<Self.cluster].withUnsafeBytes { try files.data.write($0, at: UInt64(4 * Self.subcluster)) }
        try garbage.withUnsafeBytes { try files.data.write($0, at: UInt64(2 * Self.cluster)) }
        files.close()

        let reopened = try BlockStore(directory: fixture.directory.path, options: testOptions())
        #expect(try reopened.checkConsistency().isClean)
        var expected = Array(fixture.base[0..<Self.cluster])
        expected.replaceSubrange(3 * Self.subcluster..<4 * Self.subcluster, with: kept)
        expected += fixture.base[Self.cluster..<3 * Self.cluster]
        #expect(try reopened.contents(ofVolume: fixture.clone.id).prefix(3 * Self.cluster) == expected[...])
        #expect(try reopened.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.subcluster))
        let data = try SystemFile.open(layers.dataPath(head), readOnly: true)
        defer { data.close() }
        #expect(try data.diskUsage() <= UInt64(Self.subcluster))
        reopened.close()
    }

    /// Stores written before format 2: their maps (one byte per cluster) still open, and a
    /// format 1 head copies whole clusters, since its map cannot say "part of a cluster".
    @Test func formatOneMapsStillOpenAndTheirHeadsCopyWholeClusters() throws {
        let fixture = try Fixture()
        let head = try fixture.store.headLayerID(ofVolume: fixture.clone.id)
        let frozen = try fixture.store.layerID(ofSnapshot: fixture.snapshot.id)
        let layers = fixture.store.layerDirectory
        let handle = try fixture.store.open(volumeID: fixture.clone.id)  // creates the head's files
        try handle.close()
        fixture.store.close()
        for layer in [head, frozen] { try rewriteInFormatOne(layers.mapPath(layer)) }

        var store = try BlockStore(directory: fixture.directory.path, options: testOptions())
        var clone = try store.open(volumeID: fixture.clone.id)
        #expect(try clone.read(count: fixture.base.count, at: 0) == fixture.base)
        try clone.write([7], at: 100)
        var expected = fixture.base
        expected[100] = 7
        #expect(try clone.read(count: fixture.base.count, at: 0) == expected)
        #expect(try store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.cluster))
        try clone.close()
        store.close()

        store = try BlockStore(directory: fixture.directory.path, options: testOptions())
        #expect(try store.checkConsistency().isClean)
        let (_, header) = try AllocationMapFile.open(try SystemFile.open(layers.mapPath(head), readOnly: true))
        #expect(header.formatVersion == 1)
        clone = try store.open(volumeID: fixture.clone.id)
        #expect(try clone.read(count: fixture.base.count, at: 0) == expected)
        // A snapshot gives the volume a new head, in the current format: subclusters again.
        _ = try store.createSnapshot(name: "later", of: fixture.clone.id)
        try clone.write([8], at: UInt64(Self.cluster + 100))
        expected[Self.cluster + 100] = 8
        #expect(try clone.read(count: fixture.base.count, at: 0) == expected)
        #expect(try store.volume(id: fixture.clone.id).allocatedBytes == UInt64(Self.subcluster))
        try clone.close()
        store.close()
    }

    /// Rewrites a format 2 map without partial entries as the format 1 map with the same entries.
    private func rewriteInFormatOne(_ path: String) throws {
        let file = try SystemFile.open(path)
        let (map, header) = try AllocationMapFile.open(file)
        var entries: [(Int, MapEntry)] = []
        try map.forEachEntry { entries.append(($0, $1)) }
        file.close()
        try SystemDirectory.removeFile(path)
        let old = try SystemFile.open(path, create: true, exclusive: true)
        defer { old.close() }
        var formatOne = header
        formatOne.formatVersion = 1
        try AllocationMapFile(file: old, formatVersion: 1).writeHeader(formatOne)
        for (cluster, entry) in entries {
            precondition(entry.state != .partial)
            try [entry.state.rawValue].withUnsafeBytes { try old.write($0, at: AllocationMapFile.headerSize + UInt64(cluster)) }
        }
    }
}
