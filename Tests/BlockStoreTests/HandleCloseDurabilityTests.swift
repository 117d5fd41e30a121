import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// `VolumeHandle.close()` makes the handle's writes durable even when the volume stays open for
/// another user (a second handle, a background flatten), so that a crash right after it loses
/// nothing. The crash test found the gap: a close that was not the last one wrote nothing, and a
/// flushed-and-closed write read back as zeros after a SIGKILL and a reboot.
@Suite(.blockingTolerant) struct HandleCloseDurabilityTests {
    @Test func closingOneOfTwoHandlesMakesItsWritesDurable() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        defer { store.close() }
        let volume = try store.createVolume(name: "v", size: 1 << 20, clusterSize: 4096)
        let keeper = try store.open(volumeID: volume.id)
        let writer = try store.open(volumeID: volume.id)
        let written = pattern(seed: 7, count: 158)
        try writer.write(written, at: 444_207)
        try writer.close()

        let crashed = try Self.crashImage(of: directory.path, headOf: volume.id, in: store)
        let reopened = try BlockStore(directory: crashed.path + "/store", options: testOptions())
        defer { reopened.close() }
        #expect(try Array(reopened.contents(ofVolume: volume.id)[444_207..<444_365]) == written)
        try keeper.close()
    }

    @Test func closingAHandleWhileAFlattenHoldsTheVolumeMakesItsWritesDurable() throws {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        defer { store.close() }
        let base = try store.createVolume(name: "base", size: 1 << 20, clusterSize: 4096)
        let baseHandle = try store.open(volumeID: base.id)
        try baseHandle.write(pattern(seed: 8, count: 1 << 19), at: 0)
        try baseHandle.close()
        let snapshot = try store.createSnapshot(name: "s", of: base.id)
        let clone = try store.createVolume(name: "c", size: 1 << 20, source: .snapshot(id: snapshot.id))
        let written = pattern(seed: 9, count: 158)
        var crashed: TemporaryDirectory?
        var failure: (any Error)?
        // The flatten holds the volume open while it reports progress: a handle opened, written
        // and closed then is not the volume's last user.
        try store.flatten(volumeID: clone.id) { done, _ in
            guard done == 0, crashed == nil, failure == nil else { return }
            do {
                let handle = try store.open(volumeID: clone.id)
                try handle.write(written, at: 900_001)
                try handle.close()
                crashed = try Self.crashImage(of: directory.path, headOf: clone.id, in: store)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        let image = try #require(crashed)
        let reopened = try BlockStore(directory: image.path + "/store", options: testOptions())
        defer { reopened.close() }
        #expect(try Array(reopened.contents(ofVolume: clone.id)[900_001..<900_159]) == written)
    }

    /// A copy of the store's files (in `store` under the directory returned) as a SIGKILL would
    /// leave them, to be reopened as after a reboot: the head map's dirty mark is moved to another
    /// boot, so recovery punches whatever the map does not describe (written, never made durable).
    static func crashImage(of path: String, headOf volumeID: String, in store: BlockStore) throws -> TemporaryDirectory {
        let image = try TemporaryDirectory(.fast)
        let copy = image.path + "/store"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try? FileManager.default.removeItem(atPath: copy + "/store.lock")
        let head = try store.headLayerID(ofVolume: volumeID)
        let files = try LayerDirectory(path: copy + "/layers").openLayer(head, writable: true)
        defer { files.close() }
        if try files.map.readHeader().dirty {
            try files.map.setDirty(true, boot: BootIdentity(text: "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"))
        }
        return image
    }
}
