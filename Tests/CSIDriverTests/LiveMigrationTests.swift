#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// A real QEMU live migration of a VM whose disk is a Strata ReadWriteMany Block volume: an RWX
/// clone of a golden snapshot, staged and published on node A where the guest runs, then staged
/// and published on node B for the incoming QEMU, the migration driven through QMP as libvirt
/// does it, then A unpublished and unstaged as the kubelet does when the source pod ends. The
/// guest writes numbered, checksummed blocks with O_DIRECT (cache=none) and reads them back.
@Suite("Live migration on Strata", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available), .blockingTolerant)
struct LiveMigrationTests {
    static let diskBytes: Int64 = 64 << 20
    /// 2048 blocks of 4 KiB: the first 8 MiB of the disk; the golden image's data lies beyond.
    static let workload = QemuGuest.Workload(blocks: 2048, reportEvery: 50, verifyEvery: 500)

    @Test("A VM on an RWX Block volume: a cancelled migration leaves it on A and nothing on B; a second one moves it to B, every block verifies")
    func migrateBetweenNodes() async throws {
        if let reason = GuestImage.unavailableReason {
            print("skipped: \(reason)")
            return
        }
        let image = try GuestImage.prepared()
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]

        // The golden image: data past the guest's blocks, which must survive the move untouched.
        var golden = SparseImage(size: Self.diskBytes)
        let goldenVolume = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("golden", bytes: Self.diskBytes)) }.volume
        let goldenDevice = try await a.attach(goldenVolume.volumeID)
        for extent in SparseImage.scattered(count: 4, length: 256 << 10, size: Self.diskBytes / 2, seed: 9) {
            try golden.write(SparseImage.Extent(offset: extent.offset + Self.diskBytes / 2, data: extent.data), to: goldenDevice)
        }
        try await a.detach(goldenVolume.volumeID)
        let snapshot = try await a.controller { try await $0.createSnapshot(Requests.createSnapshot("golden-snap", of: goldenVolume.volumeID)) }.snapshot
        let layersBeforeDisk = a.layerFileCount
        let disk = try await a.controller {
            try await $0.createVolume(ReadWriteManyTests.sharedVolume("vm-disk", bytes: Self.diskBytes, snapshot: snapshot.snapshotID))
        }.volume.volumeID

        // The VM starts on A.
        let deviceA = try await a.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        var onA = QemuGuest.Configuration(disk: deviceA, networkNamespace: cluster.namespace("a"))
        onA.workload = Self.workload
        onA.asyncIO = .native
        let source = try QemuGuest.boot(onA, image: image, directory: cluster.directory.path)
        defer { source.stop() }
        let boot = try await source.waitForWorkloadStart()
        try await source.waitForWrites(300)
        print("guest on A booted in \(boot)")

        // Rollback: the target pod comes up on B, the migration is cancelled, B lets go.
        let deviceB = try await b.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        var onB = onA
        onB.disk = deviceB
        onB.networkNamespace = cluster.namespace("b")
        let abandoned = try QemuGuest.incoming(onB, image: image, name: "abandoned", directory: cluster.directory.path)
        defer { abandoned.stop() }
        try source.startMigration(to: abandoned, maxBandwidth: 1 << 20)
        try await source.waitForMigrationActive()
        #expect(try await source.cancelMigration().status == "cancelled")
        #expect(abandoned.waitForExit(.seconds(15)))
        try await b.detach(disk)
        #expect(try source.runState() == "running")
        #expect(b.layerFileCount == 0, "B holds nothing of the volume")
        let atCancel = source.workloadLog
        let afterCancel = try await source.waitForLog("a read-back pass on A after the rollback") { $0.verifiedThrough > atCancel.writes }
        #expect(afterCancel.errors.isEmpty, "\(afterCancel.errors)")

        // The real move: B stages and publishes again, QEMU on B takes over, A's pod ends.
        let deviceB2 = try await b.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        onB.disk = deviceB2
        let target = try QemuGuest.incoming(onB, image: image, directory: cluster.directory.path, handover: .libvirt)
        defer { target.stop() }
        let migration = try await source.migrate(to: target)
        print("migration on Strata: \(migration)")
        #expect(try source.runState() == "postmigrate")
        let atSwitchover = source.workloadLog
        source.stop()
        try await a.detach(disk)
        // The volume follows its VM: B takes ownership while the guest runs, A frees its copy.
        try await ReadWriteManyTests.waitUntilOwned(disk, by: b)
        try await ReadWriteManyTests.waitFor("A freeing the moved volume") { a.layerFileCount == layersBeforeDisk }
        let onTarget = try await target.waitForLog("a read-back pass on B past the switchover") {
            $0.verifiedThrough > atSwitchover.writes + Self.workload.reportEvery
        }
        #expect(onTarget.writes > atSwitchover.writes)
        #expect(atSwitchover.errors.isEmpty, "source: \(atSwitchover.errors)")
        #expect(onTarget.errors.isEmpty, "target: \(onTarget.errors)")
        print("A wrote \(atSwitchover.writes) blocks; B went on to \(onTarget.writes), verified through \(onTarget.verifiedThrough)")

        // The golden data the guest never touched is intact, read through B.
        target.stop()
        try ReadWriteManyTests.dropCache(deviceB2)
        for extent in golden.extents {
            #expect(try RawDevice.read(extent.data.count, from: deviceB2, at: extent.offset) == extent.data, "golden extent at \(extent.offset)")
        }
        try await b.detach(disk)
    }
}
