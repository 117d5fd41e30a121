@testable import CSIDriver
import Foundation
import NodeHost
import NodeHostFakes
import StrataTestSupport
import Testing

/// The node's staging logic (the real `VolumeStager`, a real store and registry) over the
/// in-memory exporter, attacher and mounter of NodeHostFakes: no root, FUSE, loop device or
/// mount. What the real kernel work does is tested in NodeServiceTests; these test the logic
/// around it: which export, device and mount each volume gets, idempotency, undoing a stage
/// cut short, and bringing volumes back after a restart.
@Suite("Node staging over in-memory fakes", .blockingTolerant)
struct FakeNodeStagingTests {
    static let ext4 = StagedVolume.Access.filesystem(type: "ext4", mountFlags: [])

    @Test("A block volume: what a pod writes through its target reads back exact and reaches the store; the sibling clone does not see it; repeats change nothing")
    func blockVolume() throws {
        let node = try FakeNode()
        defer { node.close() }
        let golden = pattern(seed: 1, count: 256 << 10)
        let (first, sibling) = try node.twoClones(of: golden)
        try node.stage(first, .block)
        try node.stage(sibling, .block)
        let target = try node.publish(first, pod: "a")
        let siblingTarget = try node.publish(sibling, pod: "b")
        let events = node.kernel.attacher.events, mounts = node.kernel.mounter.mounts

        try node.stage(first, .block)
        try node.publish(first, pod: "a")
        #expect(node.kernel.attacher.events == events, "staging and publishing again must attach nothing")
        #expect(node.kernel.mounter.mounts == mounts, "staging and publishing again must mount nothing")

        let written = pattern(seed: 2, count: 64 << 10)
        try node.write(written, at: 4096, through: target)
        #expect(try node.read(written.count, at: 4096, through: target) == written)
        #expect(try node.read(written.count, at: 4096, through: siblingTarget) == Array(golden[4096..<4096 + written.count]))

        for _ in 0..<2 { try node.stager.unpublish(volumeID: first, targetPath: target) }
        #expect(!FileManager.default.fileExists(atPath: target), "the target must be removed")
        #expect(try !node.kernel.mounter.isMountPoint(target))
        for _ in 0..<2 { try node.stager.unstage(volumeID: first, stagingPath: node.stagingPath(of: first)) }
        #expect(node.exporter.names == [sibling])
        #expect(try node.kernel.attacher.attachments().map(\.backingFile) == [node.exporter.path(of: sibling)])
        #expect(!node.stager.isStaged(first))
        #expect(try node.storedBytes(of: first, count: written.count, at: 4096) == written)
        #expect(try node.storedBytes(of: sibling, count: written.count, at: 4096) == Array(golden[4096..<4096 + written.count]))
    }

    @Test("A read-only publish refuses a pod's writes (EROFS) and nothing reaches the store; a read-write publish beside it writes, and the read-only one reads that")
    func readOnlyPublish() throws {
        let node = try FakeNode()
        defer { node.close() }
        let golden = pattern(seed: 3, count: 256 << 10)
        let (volume, _) = try node.twoClones(of: golden)
        try node.stage(volume, .block)
        let reader = try node.publish(volume, pod: "reader", readOnly: true)
        let writer = try node.publish(volume, pod: "writer")
        let refused = pattern(seed: 4, count: 4096)
        #expect(throws: NodeHostError.self) { try node.write(refused, at: 0, through: reader) }
        #expect(try node.storedBytes(of: volume, count: 4096, at: 0) == Array(golden[0..<4096]))
        let written = pattern(seed: 5, count: 4096)
        try node.write(written, at: 0, through: writer)
        #expect(try node.read(4096, at: 0, through: reader) == written)
        try node.stager.unpublish(volumeID: volume, targetPath: reader)
        try node.stager.unpublish(volumeID: volume, targetPath: writer)
        try node.stager.unstage(volumeID: volume, stagingPath: node.stagingPath(of: volume))
        #expect(try node.kernel.attacher.attachments().isEmpty, "the device must go with the last mount that held it")
    }

    @Test("A filesystem volume is formatted once, mounted at its staging path and bound to its target; staged again later it is not reformatted")
    func filesystemVolume() throws {
        let node = try FakeNode()
        defer { node.close() }
        let volume = try node.store.createVolume(name: "fs", size: 16 << 20).id
        let staging = node.stagingPath(of: volume)
        try node.stage(volume, Self.ext4)
        try node.stage(volume, Self.ext4)
        #expect(node.kernel.mounter.formatted.map(\.fsType) == [.ext4])
        #expect(try node.kernel.mounter.mountInfo(for: staging)?.fsType == "ext4")
        let target = try node.publish(volume, pod: "a")
        try node.publish(volume, pod: "a")
        #expect(node.kernel.mounter.mounts.filter { $0.target == staging || $0.target == target }.count == 2)

        let written = pattern(seed: 3, count: 32 << 10)
        try node.write(written, at: 1 << 20, through: target)
        #expect(try node.read(written.count, at: 1 << 20, through: staging) == written)

        try node.stager.unpublish(volumeID: volume, targetPath: target)
        try node.stager.unstage(volumeID: volume, stagingPath: staging)
        #expect(node.kernel.mounter.mounts.isEmpty)
        #expect(try node.kernel.attacher.attachments().isEmpty)
        try node.stage(volume, Self.ext4)
        #expect(node.kernel.mounter.formatted.count == 1, "a volume holding a filesystem is never formatted again")
        #expect(try node.read(written.count, at: 1 << 20, through: staging) == written)
        try node.stager.unstage(volumeID: volume, stagingPath: staging)
    }

    @Test("An attach that fails mid-stage leaves no registry entry, export, device or open volume, and a retry succeeds",
          arguments: [StagedVolume.Access.block, FakeNodeStagingTests.ext4])
    func failedAttach(_ access: StagedVolume.Access) throws {
        let node = try FakeNode()
        defer { node.close() }
        let volume = try node.store.createVolume(name: "cut-short", size: 16 << 20).id
        node.kernel.attacher.failNextAttach()
        #expect(throws: NodeHostError.self) { try node.stage(volume, access) }
        #expect(node.kernel.attacher.events.last == .attachFailed(file: node.exporter.path(of: volume)))
        #expect(!node.stager.isStaged(volume))
        #expect(node.exporter.names.isEmpty)
        #expect(try node.kernel.attacher.attachments().isEmpty)
        #expect(node.kernel.mounter.mounts.isEmpty)
        #expect(node.stager.opened.withLock { $0.isEmpty }, "the store volume must be closed again")
        #expect(try node.store.checkConsistency().isClean)

        try node.stage(volume, access)
        let target = try node.publish(volume, pod: "a")
        let written = pattern(seed: 4, count: 16 << 10)
        try node.write(written, at: 1 << 20, through: target)
        #expect(try node.read(written.count, at: 1 << 20, through: target) == written)
        try node.stager.unpublish(volumeID: volume, targetPath: target)
        try node.stager.unstage(volumeID: volume, stagingPath: node.stagingPath(of: volume))
        #expect(try node.storedBytes(of: volume, count: written.count, at: 1 << 20) == written)
    }

    @Test("After a restart without a keeper, every staged volume is exported, attached, mounted and bound anew, and the dead devices are gone")
    func recoveryAfterRestart() throws {
        let node = try FakeNode()
        let block = try node.store.createVolume(name: "block", size: 16 << 20).id
        let filesystem = try node.store.createVolume(name: "filesystem", size: 16 << 20).id
        try node.stage(block, .block)
        try node.stage(filesystem, Self.ext4)
        let blockTarget = try node.publish(block, pod: "a")
        let filesystemTarget = try node.publish(filesystem, pod: "b")
        let written = pattern(seed: 6, count: 64 << 10)
        try node.write(written, at: 1 << 20, through: blockTarget)
        try node.write(written, at: 2 << 20, through: filesystemTarget)
        let oldDevices = try node.kernel.attacher.attachments().map(\.device)
        let oldFile = try #require(node.kernel.mounter.device(at: blockTarget).flatMap(node.kernel.attacher.file(behind:)))

        let next = try node.restarted()
        defer { next.close() }
        #expect(!oldFile.isAlive, "the old process's exports must have died with it")
        #expect(next.exporter.names == [block, filesystem].sorted())
        for volume in [block, filesystem] {
            #expect(next.exporter.identity(of: volume) == next.stager.registry[volume]?.export, "the export keeps its recorded identity")
        }
        #expect(try next.read(written.count, at: 1 << 20, through: blockTarget) == written)
        #expect(try next.read(written.count, at: 2 << 20, through: filesystemTarget) == written)
        #expect(try next.read(written.count, at: 2 << 20, through: next.stagingPath(of: filesystem)) == written)
        let detached = next.kernel.attacher.events.compactMap { if case .detached(let device) = $0 { device } else { nil } }
        #expect(Set(detached) == Set(oldDevices), "every device over the dead exports must be detached")
        #expect(try next.kernel.attacher.attachments().count == 2)
        for path in [blockTarget, filesystemTarget, next.stagingPath(of: filesystem)] {
            #expect(next.kernel.mounter.mounts.filter { $0.target == path }.count == 1, "one live mount at \(path)")
        }
        #expect(next.kernel.mounter.formatted.count == 1, "the restart must not format again")

        try next.stager.unpublish(volumeID: block, targetPath: blockTarget)
        try next.stager.unpublish(volumeID: filesystem, targetPath: filesystemTarget)
        try next.stager.unstage(volumeID: block, stagingPath: next.stagingPath(of: block))
        try next.stager.unstage(volumeID: filesystem, stagingPath: next.stagingPath(of: filesystem))
        #expect(next.kernel.mounter.mounts.isEmpty)
        #expect(try next.kernel.attacher.attachments().isEmpty)
        #expect(next.exporter.names.isEmpty)
    }
}
