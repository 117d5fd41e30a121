#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// Three nodes, each a network namespace with its own real strata-csi: snapshots and volumes of
/// one node cloned on the others, through the peer protocol's sparse layer transfer.
@Suite("Multi-node clones", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available), .blockingTolerant)
struct MultiNodeTests {
    static let volumeBytes: Int64 = 256 << 20

    @Test("A snapshot and a volume of node A clone byte-exact on B and C; only allocated bytes travel; all copies are freed")
    func clonesAcrossNodes() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b", "c"])
        defer { cluster.tearDown() }
        for node in ["a", "b", "c"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"], c = cluster["c"]

        // Node A: a sparse golden image written through its real block device, then snapshotted.
        var image = SparseImage(size: Self.volumeBytes)
        let golden = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("golden", bytes: Self.volumeBytes)) }.volume
        #expect(golden.accessibleTopology.first?.segments["topology.strata.csi.dev/node"] == "node-a")
        let goldenDevice = try await a.attach(golden.volumeID)
        for extent in SparseImage.scattered(count: 32, length: 192 << 10, size: Self.volumeBytes, seed: 1) {
            try image.write(extent, to: goldenDevice)
        }
        let snapshot = try await a.controller { try await $0.createSnapshot(Requests.createSnapshot("golden-snap", of: golden.volumeID)) }.snapshot
        let snapshotImage = image
        // What the snapshot's layer holds (partly written clusters of a volume without parent are
        // stored whole): A's store has nothing else yet, its new head being empty.
        let allocated = try await a.metric("strata_allocated_bytes")
        #expect(allocated >= Double(snapshotImage.allocatedBytes) && allocated < Double(Self.volumeBytes) / 16)
        // Written after the snapshot: seen by a clone of the volume, not of the snapshot.
        try image.write(SparseImage.Extent(offset: 100 << 20, data: MultiNode.pattern(seed: 77, count: 64 << 10)), to: goldenDevice)

        // Node B: the first clone fetches the layers, the second fetches nothing.
        let started = ContinuousClock.now
        let onB = try await b.controller {
            try await $0.createVolume(MultiNode.blockVolume("vm-b1", bytes: Self.volumeBytes, snapshot: snapshot.snapshotID))
        }.volume
        let firstClone = ContinuousClock.now - started
        #expect(onB.accessibleTopology.first?.segments["topology.strata.csi.dev/node"] == "node-b")
        let received = try await b.metric("strata_peer_bytes_received_total")
        #expect(received >= allocated && received <= allocated * 1.1, "B received \(received) bytes for \(allocated) allocated")
        #expect(try await b.metric("strata_peer_fetches_total", labels: "result=\"ok\"") == 1)

        let secondStarted = ContinuousClock.now
        let secondOnB = try await b.controller {
            try await $0.createVolume(MultiNode.blockVolume("vm-b2", bytes: Self.volumeBytes, snapshot: snapshot.snapshotID))
        }.volume
        let secondClone = ContinuousClock.now - secondStarted
        #expect(try await b.metric("strata_peer_bytes_received_total") == received, "a second clone transfers nothing")
        #expect(try await b.metric("strata_peer_fetches_total", labels: "result=\"ok\"") == 1)
        let localStarted = ContinuousClock.now
        let localClone = try await a.controller {
            try await $0.createVolume(MultiNode.blockVolume("local-a", bytes: Self.volumeBytes, snapshot: snapshot.snapshotID))
        }.volume
        let local = ContinuousClock.now - localStarted
        print("multi-node: first clone on B \(firstClone) (\(Int(received)) bytes), second \(secondClone), local clone on A \(local)")

        // Node C: a clone of the snapshot and a clone of the volume itself.
        let onC = try await c.controller {
            try await $0.createVolume(MultiNode.blockVolume("vm-c1", bytes: Self.volumeBytes, snapshot: snapshot.snapshotID))
        }.volume
        let volumeCloneOnC = try await c.controller {
            try await $0.createVolume(MultiNode.blockVolume("vm-c2", bytes: Self.volumeBytes, volume: golden.volumeID))
        }.volume
        #expect(volumeCloneOnC.contentSource.volume.volumeID == golden.volumeID)

        // Every clone reads back byte-exact on its node.
        let deviceB = try await b.attach(onB.volumeID)
        try snapshotImage.verify(deviceB, "clone of the snapshot on B")
        let deviceB2 = try await b.attach(secondOnB.volumeID)
        try snapshotImage.verify(deviceB2, "second clone on B")
        let deviceC = try await c.attach(onC.volumeID)
        try snapshotImage.verify(deviceC, "clone of the snapshot on C")
        let deviceC2 = try await c.attach(volumeCloneOnC.volumeID)
        try image.verify(deviceC2, "clone of A's volume on C")

        // A write through B's clone is B's alone.
        var imageB = snapshotImage
        try imageB.write(SparseImage.Extent(offset: 4096, data: MultiNode.pattern(seed: 99, count: 8192)), to: deviceB)
        try imageB.verify(deviceB, "B's clone after its write")
        try snapshotImage.verify(deviceB2, "B's other clone")
        try snapshotImage.verify(deviceC, "C's clone after B wrote")
        try image.verify(goldenDevice, "A's volume after B wrote")

        // Pre-placement: a snapshot of a class with replicate: all-nodes reaches B and C with no clone asking.
        let placed = try await a.controller {
            var request = Requests.createSnapshot("placed-snap", of: golden.volumeID)
            request.parameters = ["replicate": "all-nodes"]
            return try await $0.createSnapshot(request)
        }.snapshot
        let placedBy = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < placedBy {
            if try await b.metric("strata_peer_replica_snapshots") == 2, try await c.metric("strata_peer_replica_snapshots") == 3 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        // B and C held the golden snapshot's replica (and C the hidden one its volume clone came
        // from), and now this one.
        #expect(try await b.metric("strata_peer_replica_snapshots") == 2)
        #expect(try await c.metric("strata_peer_replica_snapshots") == 3)
        let fetchesBefore = try await b.metric("strata_peer_fetches_total", labels: "result=\"ok\"")
        let placedClone = try await b.controller {
            try await $0.createVolume(MultiNode.blockVolume("vm-placed", bytes: Self.volumeBytes, snapshot: placed.snapshotID))
        }.volume
        #expect(try await b.metric("strata_peer_fetches_total", labels: "result=\"ok\"") == fetchesBefore, "the first clone found it placed")
        let devicePlaced = try await b.attach(placedClone.volumeID)
        try image.verify(devicePlaced, "clone of the pre-placed snapshot on B")
        try await b.detach(placedClone.volumeID)
        try await b.controller { _ = try await $0.deleteVolume(.with { $0.volumeID = placedClone.volumeID }) }
        try await a.controller { _ = try await $0.deleteSnapshot(.with { $0.snapshotID = placed.snapshotID }) }

        // Delete everything: every layer file on every node goes, copies included.
        for (node, volumes) in [(a, [golden.volumeID]), (b, [onB.volumeID, secondOnB.volumeID]), (c, [onC.volumeID, volumeCloneOnC.volumeID])] {
            for volume in volumes { try await node.detach(volume) }
        }
        #expect(b.layerFileCount > 0 && c.layerFileCount > 0)
        try await a.controller { controller in
            _ = try await controller.deleteVolume(.with { $0.volumeID = localClone.volumeID })
            _ = try await controller.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshotID })
            _ = try await controller.deleteVolume(.with { $0.volumeID = golden.volumeID })
        }
        for (node, volumes) in [(b, [onB.volumeID, secondOnB.volumeID]), (c, [onC.volumeID, volumeCloneOnC.volumeID])] {
            try await node.controller { controller in
                for volume in volumes { _ = try await controller.deleteVolume(.with { $0.volumeID = volume }) }
            }
        }
        // The origin's hint (or, at worst, the 2 s check) drops the replicas.
        let deadline = ContinuousClock.now + .seconds(15)
        while [a, b, c].contains(where: { $0.layerFileCount > 0 }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        for node in [a, b, c] {
            #expect(node.layerFileCount == 0, "node \(node.name) still holds \(node.layerFileCount) layer files")
            #expect(try await node.metric("strata_peer_copied_layers") == 0)
        }
        for node in [a, b, c] { node.stop() }
        #expect(NodeEnvironment.leftovers(under: cluster.directory.path).isEmpty)
    }
}

enum MultiNodeEnvironment {
    static var available: Bool {
        for tool in ["/usr/bin/nsenter", "/usr/bin/openssl"] where !FileManager.default.isExecutableFile(atPath: tool) {
            print("skipping multi-node tests: \(tool) is missing")
            return false
        }
        guard (try? ExternalTool.run("ip", "netns", "list")) != nil else {
            print("skipping multi-node tests: ip netns does not work here")
            return false
        }
        return true
    }
}

enum MultiNode {
    static func blockVolume(_ name: String, bytes: Int64, snapshot: String? = nil, volume: String? = nil) -> Csi_V1_CreateVolumeRequest {
        var request = Requests.createVolume(name, bytes: bytes, snapshot: snapshot, volume: volume)
        request.volumeCapabilities = [Requests.blockCapability]
        return request
    }

    /// The shared deterministic bytes for a seed, as the `Data` a `SparseImage` extent holds.
    static func pattern(seed: UInt64, count: Int) -> Data {
        Data(StrataTestSupport.pattern(seed: seed, count: count))
    }
}

/// What a block volume should hold: zeros, with extents written at known offsets.
struct SparseImage {
    struct Extent {
        var offset: Int64
        var data: Data
    }

    let size: Int64
    private(set) var extents: [Extent] = []

    init(size: Int64) { self.size = size }

    /// `count` extents of `length` bytes at 4 KiB-aligned offsets, one in each of `count` equal regions.
    static func scattered(count: Int, length: Int, size: Int64, seed: UInt64) -> [Extent] {
        let region = size / Int64(count)
        var generator = seed
        return (0..<count).map { index in
            generator = generator &* 6364136223846793005 &+ 1442695040888963407
            let slack = (region - Int64(length)) / 4096
            let offset = Int64(index) * region + Int64(generator >> 33) % max(1, slack) * 4096
            return Extent(offset: offset, data: MultiNode.pattern(seed: seed &+ UInt64(index) &* 1000, count: length))
        }
    }

    /// Bytes written (extents never overlap in these tests, and are 4 KiB-aligned).
    var allocatedBytes: Int { extents.reduce(0) { $0 + $1.data.count } }

    mutating func write(_ extent: Extent, to device: String) throws {
        try RawDevice.write(extent.data, to: device, at: extent.offset)
        extents.append(extent)
    }

    /// Reads the whole device and compares it with the image.
    func verify(_ device: String, _ what: String) throws {
        let chunk = 8 << 20
        var expected = Data(count: chunk)
        var offset: Int64 = 0
        while offset < size {
            let count = Int(min(Int64(chunk), size - offset))
            expected.resetBytes(in: 0..<chunk)
            for extent in extents where extent.offset < offset + Int64(count) && extent.offset + Int64(extent.data.count) > offset {
                let start = max(extent.offset, offset), end = min(extent.offset + Int64(extent.data.count), offset + Int64(count))
                expected.replaceSubrange(Int(start - offset)..<Int(end - offset),
                                         with: extent.data[Int(start - extent.offset)..<Int(end - extent.offset)])
            }
            let actual = try RawDevice.read(count, from: device, at: offset)
            guard actual == expected.prefix(count) else {
                Issue.record("\(what): bytes differ in [\(offset), \(offset + Int64(count)))")
                return
            }
            offset += Int64(count)
        }
    }
}
