#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// An ownership handover cut by SIGKILL of either side at a random moment: after the restart,
/// exactly one node owns the volume (the new one, once it finishes), every write either side
/// acknowledged reads back, and nothing of the volume is left on the other node.
@Suite("Ownership handover under SIGKILL", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available), .blockingTolerant)
struct HandOverCrashTests {
    /// 20 rounds here; `STRATA_LONG=1` makes it 200.
    static let rounds = ProcessInfo.processInfo.environment["STRATA_LONG"] == "1" ? 200 : 20
    static let volumeBytes: Int64 = 16 << 20

    @Test("SIGKILL of the old or the new owner during a handover: one owner, no acknowledged write lost, nothing leaked")
    func killDuringHandOver() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<Self.rounds {
            let a = cluster["a"], b = cluster["b"]
            print("handover round \(round): starting (cluster \(cluster.directory.path))")
            let (disk, deviceB, written) = try await Self.stagedOnBoth(
                "vm-\(round)", a: a, b: b,
                writing: SparseImage.Extent(offset: Int64(round % 8) << 20, data: MultiNode.pattern(seed: UInt64(round), count: 256 << 10)))
            var image = written

            // A lets go (the migration ended on B): B takes the volume over; one side dies on the way.
            try await a.detach(disk)
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...300, using: &generator)))
            let victim = round % 2 == 0 ? "a" : "b"
            cluster[victim].kill()
            try cluster.start(victim)

            let owner = cluster["b"], previous = cluster["a"]
            try await Self.waitUntilOwned(disk, by: owner, in: cluster, "round \(round) (\(victim) killed): the handover did not finish")
            try ReadWriteManyTests.dropCache(deviceB)
            try image.verify(deviceB, "round \(round) (\(victim) killed): the acknowledged write")
            let late = SparseImage.Extent(offset: 12 << 20, data: MultiNode.pattern(seed: 1000 + UInt64(round), count: 64 << 10))
            try image.write(late, to: deviceB)
            try await owner.detach(disk)
            try await ReadWriteManyTests.waitFor("round \(round): A holding nothing of the moved volume") { previous.layerFileCount == 0 }
            let deviceOnOwner = try await owner.attach(disk, capability: ReadWriteManyTests.sharedBlock)
            try image.verify(deviceOnOwner, "round \(round): every write, on the new owner")
            try await owner.detach(disk)
            _ = try await previous.controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
            print("handover round \(round): \(victim) killed; the volume moved to B")
            #expect(owner.layerFileCount == 0 && previous.layerFileCount == 0,
                    "round \(round): layers left after the delete: B \(owner.layerFiles), A \(previous.layerFiles); \(cluster.complaints())")
        }
        let leftovers = NodeEnvironment.leftovers(under: cluster.directory.path).filter { $0.hasPrefix("mount") && !$0.contains("/state/exports") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// An RWX volume made on A and staged on both nodes (A owns it), with `extent` written
    /// through B's device: the start of every handover here. Returns B's device and what the
    /// volume holds.
    static func stagedOnBoth(_ name: String, a: ClusterNode, b: ClusterNode, writing extent: SparseImage.Extent)
        async throws -> (disk: String, deviceB: String, image: SparseImage) {
        let disk = try await a.controller {
            try await $0.createVolume(ReadWriteManyTests.sharedVolume(name, bytes: Self.volumeBytes))
        }.volume.volumeID
        _ = try await a.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        let deviceB = try await b.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        var image = SparseImage(size: Self.volumeBytes)
        try image.write(extent, to: deviceB)
        return (disk, deviceB, image)
    }

    /// `ReadWriteManyTests.waitUntilOwned`, and when it times out, `failure` with each node's last
    /// notices, warnings and errors.
    static func waitUntilOwned(_ volumeID: String, by node: ClusterNode, in cluster: PeerCluster, _ failure: String) async throws {
        do {
            try await ReadWriteManyTests.waitUntilOwned(volumeID, by: node)
        } catch {
            Issue.record("\(failure)\n\(cluster.complaints())")
            throw error
        }
    }

    /// The owner's unstage sends the other stager a hint to take the volume over; a hint lost
    /// (the owner killed before it went out, or, as here, the stager cut off the network at that
    /// moment) must not leave the volume on a node that no longer stages it for good.
    @Test("A hint to take a volume over that is lost (the stager unreachable when the owner unstages): the volume moves once the stager is back")
    func lostHintIsSentAgain() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]
        let (disk, deviceB, image) = try await Self.stagedOnBoth(
            "vm-lost-hint", a: a, b: b, writing: SparseImage.Extent(offset: 1 << 20, data: MultiNode.pattern(seed: 77, count: 128 << 10)))

        try cluster.setLink("b", up: false)
        try await a.detach(disk)
        try await ReadWriteManyTests.waitFor("A giving up on its hint to B") {
            a.log.contains("could not offer a volume to the node that stages it")
        }
        try cluster.setLink("b", up: true)
        try await Self.waitUntilOwned(disk, by: b, in: cluster, "the volume did not move to B after its hint was lost")
        try ReadWriteManyTests.dropCache(deviceB)
        try image.verify(deviceB, "B, owner now")
        try await b.detach(disk)
        try await ReadWriteManyTests.waitFor("A holding nothing of the moved volume") { a.layerFileCount == 0 }
        _ = try await b.controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
    }
}
