#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import StrataTestSupport
import Testing

/// Proves the QEMU live-migration harness itself, on storage that is trivially shared (one loop
/// device, one file) before it is pointed at two nodes' Strata devices: a guest that writes and
/// reads back checksummed blocks migrates to a second QEMU and goes on there with every block
/// intact; a cancelled migration leaves it running on the source; and the workload does notice
/// a block changed under it, so "no ERROR line" means something.
@Suite("QEMU migration harness", .serialized, .blockingTolerant)
struct QemuMigrationHarnessTests {
    /// 2048 blocks of 4 KiB (8 MiB of the 64 MiB disk): rounds come around quickly, so blocks are
    /// rewritten, and a read-back pass every 500 writes stays cheap under TCG.
    static let workload = QemuGuest.Workload(blocks: 2048, reportEvery: 50, verifyEvery: 500)
    static let diskMebibytes = 64

    /// The image, or nil with the reason printed where guests cannot run (not root, no QEMU).
    static func guestImage() throws -> GuestImage? {
        if let reason = GuestImage.unavailableReason {
            print("skipped: \(reason)")
            return nil
        }
        return try GuestImage.prepared()
    }

    @Test("""
        On a shared loop device, from namespace A to B: a cancelled migration leaves the guest on A; a second one, handed \
        over as libvirt does it, moves it, \
        every block verifies; then an I/O error of the device reaches the guest on B
        """)
    func cancelThenMigrateOnLoopDevice() async throws {
        guard let image = try Self.guestImage() else { return }
        let disk = try LoopDevice(mebibytes: Self.diskMebibytes)
        defer { disk.tearDown() }
        let nodeA = try BareNetworkNamespace(label: "a"), nodeB = try BareNetworkNamespace(label: "b")
        defer { nodeA.tearDown(); nodeB.tearDown() }
        let directory = try TemporaryDirectory()
        var configuration = QemuGuest.Configuration(disk: disk.device, networkNamespace: nodeA.name)
        configuration.workload = Self.workload
        configuration.asyncIO = .native
        var onNodeB = configuration
        onNodeB.networkNamespace = nodeB.name

        let source = try QemuGuest.boot(configuration, image: image, directory: directory.path)
        defer { source.stop() }
        #expect(BareNetworkNamespace.identity(ofProcess: source.pid) == nodeA.identity)
        let boot = try await source.waitForWorkloadStart()
        let firstWrites = try await source.waitForWrites(300)
        print("guest booted in \(boot), wrote 300 blocks \(firstWrites - boot) later")

        // Rollback: throttled to 1 MiB/s, the copy of 256 MiB cannot finish before the cancel.
        let abandoned = try QemuGuest.incoming(onNodeB, image: image, name: "abandoned", directory: directory.path)
        defer { abandoned.stop() }
        try source.startMigration(to: abandoned, maxBandwidth: 1 << 20)
        try await source.waitForMigrationActive()
        let cancelled = try await source.cancelMigration()
        #expect(cancelled.status == "cancelled")
        #expect(try source.runState() == "running")
        #expect(abandoned.waitForExit(.seconds(15)), "the abandoned target should exit once its stream is cut")
        let atCancel = source.workloadLog
        let afterCancel = try await source.waitForLog("a read-back pass after the cancel") { $0.verifiedThrough > atCancel.writes }
        #expect(afterCancel.errors.isEmpty, "\(afterCancel.errors)")

        // The real move.
        let target = try QemuGuest.incoming(onNodeB, image: image, directory: directory.path, handover: .libvirt)
        defer { target.stop() }
        #expect(BareNetworkNamespace.identity(ofProcess: target.pid) == nodeB.identity)
        let migration = try await source.migrate(to: target)
        print("migration: \(migration)")
        #expect(try source.runState() == "postmigrate")
        try await expectGuestContinues(from: source, on: target)

        // With werror=report the guest sees the host's EIO: blocks past the device's new end
        // (4 MiB = block 1024 on) fail, and the workload says so.
        try disk.shrink(toMebibytes: 4)
        let failing = try await target.waitForLog("I/O errors past the shrunk device's end") { log in
            log.errors.contains { $0.hasPrefix("ERROR write block") && $0.contains("Input/output error") }
        }
        #expect(try target.runState() == "running")
        print("I/O error reported: \(failing.errors.first { $0.hasPrefix("ERROR write block") } ?? "")")
    }

    @Test("On a plain file (aio=threads): the guest migrates, and a block overwritten under it on the target is reported")
    func migrateOnPlainFileAndNoticeWrongBlock() async throws {
        guard let image = try Self.guestImage() else { return }
        let directory = try TemporaryDirectory()
        let diskPath = directory.path + "/disk.img"
        guard FileManager.default.createFile(atPath: diskPath, contents: nil), truncate(diskPath, off_t(Self.diskMebibytes) << 20) == 0 else {
            throw POSIXError(.EIO)
        }
        var configuration = QemuGuest.Configuration(disk: diskPath)
        configuration.workload = Self.workload
        configuration.asyncIO = .threads

        let source = try QemuGuest.boot(configuration, image: image, directory: directory.path)
        defer { source.stop() }
        try await source.waitForWrites(300)
        let target = try QemuGuest.incoming(configuration, image: image, directory: directory.path)
        defer { target.stop() }
        let migration = try await source.migrate(to: target)
        print("migration: \(migration)")
        try await expectGuestContinues(from: source, on: target)

        // A block the guest wrote a few dozen writes ago, overwritten behind its back: it is
        // rewritten only a whole round (2048 writes) later, so the next pass (at most 500 writes
        // away) must find it wrong.
        let now = target.workloadLog.writes
        let victim = (now - 61) % Self.workload.blocks // holds write now - 60
        try overwriteBlock(victim, of: diskPath)
        let noticed = try await target.waitForLog("the workload reporting block \(victim)") { log in
            log.errors.contains { $0.contains("ERROR block \(victim):") }
        }
        print("noticed: \(noticed.errors)")
    }

    /// The guest writes on the target, and a read-back pass there covers writes made on both
    /// sides of the switchover, with no error on either console.
    private func expectGuestContinues(from source: QemuGuest, on target: QemuGuest) async throws {
        let atSwitchover = source.workloadLog
        let onTarget = try await target.waitForLog("a read-back pass past the switchover") {
            $0.verifiedThrough > atSwitchover.writes + Self.workload.reportEvery
        }
        #expect(onTarget.writes > atSwitchover.writes)
        #expect(onTarget.verifiedBlocks == min(onTarget.verifiedThrough, Self.workload.blocks))
        #expect(atSwitchover.errors.isEmpty, "source: \(atSwitchover.errors)")
        #expect(onTarget.errors.isEmpty, "target: \(onTarget.errors)")
        print("source wrote \(atSwitchover.writes) blocks; the target went on to \(onTarget.writes), verified through \(onTarget.verifiedThrough)")
    }

    /// Writes 4 KiB of a foreign pattern over one block of the disk and syncs it (QEMU reads the
    /// file with O_DIRECT, which sees written-back page cache).
    private func overwriteBlock(_ index: Int, of path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let pattern = [UInt8](repeating: 0x5A, count: 4096)
        guard pwrite(fd, pattern, pattern.count, off_t(index) * 4096) == pattern.count, fsync(fd) == 0 else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
    }
}
