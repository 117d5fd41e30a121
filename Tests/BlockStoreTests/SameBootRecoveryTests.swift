import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// A process killed while a filesystem above it stays mounted (a node plugin restarted under a
/// running pod): writes it completed but never flushed are still in the page cache and must be
/// kept; after a reboot they are punched as before.
@Suite(.blockingTolerant) struct SameBootRecoveryTests {
    /// A volume with a flushed cluster 0, then a crash that left cluster 5 written but unmapped
    /// (a whole cluster), cluster 7 with two whole subclusters, and subcluster 0 of cluster 9
    /// torn (its first 4 KiB of 8 KiB written: 128 KiB clusters have 8 KiB subclusters).
    private func crashedStore(boot: BootIdentity?) throws -> (TemporaryDirectory, String, written: [UInt8]) {
        let directory = try TemporaryDirectory(.fast)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let volume = try store.createVolume(name: "v", size: 2 << 20, clusterSize: 131072)
        let handle = try store.open(volumeID: volume.id)
        try handle.write(pattern(seed: 1, count: 131072), at: 0)
        try handle.close()
        let head = try store.headLayerID(ofVolume: volume.id)
        let layers = store.layerDirectory
        store.close()

        let files = try layers.openLayer(head, writable: true)
        try files.map.setDirty(true, boot: boot)
        let written = pattern(seed: 2, count: 131072)
        try written.withUnsafeBytes { try files.data.write($0, at: 131072 * 5) }
        try written[0..<16384].withUnsafeBytes { try files.data.write($0, at: 131072 * 7 + 8192) }
        try written[0..<4096].withUnsafeBytes { try files.data.write($0, at: 131072 * 9) }
        files.close()
        return (directory, volume.id, written)
    }

    @Test func inTheSameBootWholeSubclustersAreAdoptedAndTornOnesPunched() throws {
        let (directory, volumeID, written) = try crashedStore(boot: BootIdentity.current)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try store.checkConsistency().isClean)
        let handle = try store.open(volumeID: volumeID)
        #expect(try handle.read(count: 131072, at: 0) == pattern(seed: 1, count: 131072))
        #expect(try handle.read(count: 131072, at: 131072 * 5) == written)
        var cluster7 = [UInt8](repeating: 0, count: 131072)
        cluster7.replaceSubrange(8192..<24576, with: written[0..<16384])
        #expect(try handle.read(count: 131072, at: 131072 * 7) == cluster7)
        #expect(try handle.read(count: 131072, at: 131072 * 9) == [UInt8](repeating: 0, count: 131072))
        #expect(try store.volume(id: volumeID).allocatedBytes == 2 * 131072 + 16384)
        try handle.close()
        // Adopted entries reached the map file: a clean reopen sees the same.
        store.close()
        let again = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try again.contents(ofVolume: volumeID)[131072 * 5..<131072 * 6] == written[...])
    }

    @Test func afterARebootUnmappedDataIsPunched() throws {
        let (directory, volumeID, _) = try crashedStore(boot: previousBoot)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        let contents = try store.contents(ofVolume: volumeID)
        #expect(contents[0..<131072] == pattern(seed: 1, count: 131072)[...])
        #expect(contents[131072...].allSatisfy { $0 == 0 })
        #expect(try store.volume(id: volumeID).allocatedBytes == 131072)
    }

    @Test func aDirtyMarkWithoutABootIsTreatedAsAReboot() throws {
        let (directory, volumeID, _) = try crashedStore(boot: nil)
        let store = try BlockStore(directory: directory.path, options: testOptions())
        #expect(try store.contents(ofVolume: volumeID)[131072...].allSatisfy { $0 == 0 })
    }
}
