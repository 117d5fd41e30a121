import BlockStore
import Foundation
import Glibc
import GRDB

/// The `store-open` target, end to end: a small real store (a volume with data, a snapshot, a
/// clone with its own writes) whose files are restored before every input, then one layer's
/// allocation map replaced by the fuzzed one, and the store opened as a restarted driver would.
///
/// The store must either refuse (`.corrupt`) or recover: then every volume opens (or is refused
/// as `.corrupt`) and reads end to end, no map is left dirty, and opening the store again works.
enum StoreOpenHarness {
    struct Pristine {
        /// Every file of the store directory, by path relative to it.
        var files: [(path: String, bytes: [UInt8])]
        /// The layers whose map the fuzzer may replace, with what their header must say.
        var maps: [(path: String, layerID: Int64, clusterSize: UInt32)]
    }

    /// A new directory per input: nothing of one input's store can touch the next one's files.
    nonisolated(unsafe) static var runs = 0

    static let pristine: Pristine = {
        do {
            return try makePristine()
        } catch {
            fatalError("cannot build the store-open fixture: \(error)")
        }
    }()

    static func run(_ input: inout FuzzInput) {
        let pristine = self.pristine
        runs += 1
        Workspace.remove(Workspace.path + "/open-store-\(runs - 1)")
        let live = Workspace.path + "/open-store-\(runs)"
        restore(pristine, into: live)
        let target = pristine.maps[Int(input.byte()) % pristine.maps.count]
        let map = FuzzedMapFile(&input, layerID: target.layerID, clusterSize: target.clusterSize)
        map.write(toPath: live + "/" + target.path)

        let store: BlockStore
        do {
            store = try BlockStore(directory: live, options: StoreMetadataHarness.quietOptions)
        } catch {
            expectCorrupt(error, "opening the store")
            return
        }
        readEveryVolume(of: store)
        do {
            let report = try store.checkConsistency()
            check(report.dirtyMaps.isEmpty, "maps still dirty after the store opened: \(report.dirtyMaps)")
        } catch {
            check(false, "checkConsistency failed: \(error)")
        }
        store.close()
        do {
            let again = try BlockStore(directory: live, options: StoreMetadataHarness.quietOptions)
            again.close()
        } catch {
            check(false, "a store that opened once does not open again: \(error)")
        }
    }

    static func readEveryVolume(of store: BlockStore) {
        let volumes: [Volume]
        do {
            volumes = try store.listVolumes(after: nil, limit: 0).items
        } catch {
            check(false, "listing volumes failed: \(error)")
            return
        }
        check(volumes.count == 2, "the fixture has 2 volumes, the store lists \(volumes.count)")
        for volume in volumes {
            do {
                let handle = try store.open(volumeID: volume.id)
                defer { try? handle.close() }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(volume.size), alignment: 4096)
                defer { buffer.deallocate() }
                try handle.read(into: buffer, at: 0)
            } catch {
                expectCorrupt(error, "opening and reading volume \(volume.name)")
            }
        }
    }

    static func expectCorrupt(_ error: any Error, _ what: String) {
        let sqlite = ((error as? StoreError)?.underlying as? DatabaseError).map { " (SQLite \($0.extendedResultCode.rawValue))" } ?? ""
        check((error as? StoreError)?.code == .corrupt, "\(what) failed with \(error)\(sqlite), not .corrupt")
    }

    // MARK: Fixture

    private static func makePristine() throws -> Pristine {
        let directory = Workspace.path + "/open-store-pristine"
        let store = try BlockStore(directory: directory, options: StoreMetadataHarness.quietOptions)
        // 16 KiB clusters written 4 KiB at a time: the layers above the first hold partial clusters.
        let block = 4096
        let base = try store.createVolume(name: "base", size: UInt64(16 * block), clusterSize: 16384)
        try write(store, base.id, blocks: [0, 1, 5, 15])
        _ = try store.createSnapshot(name: "snap", of: base.id)
        try write(store, base.id, blocks: [1, 2])
        let clone = try store.createVolume(name: "clone", size: UInt64(24 * block), source: .volume(id: base.id))
        try write(store, clone.id, blocks: [5, 20])
        store.close()

        var files: [(String, [UInt8])] = []
        var maps: [(String, Int64, UInt32)] = []
        let enumerator = FileManager.default.enumerator(atPath: directory)!
        while let path = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory + "/" + path, isDirectory: &isDirectory), !isDirectory.boolValue, !path.hasSuffix("-shm") else { continue }
            let bytes = [UInt8](FileManager.default.contents(atPath: directory + "/" + path)!)
            files.append((path, bytes))
            if path.hasSuffix(".map") {
                maps.append((path, Int64(bitPattern: FuzzedMapFile.load(UInt64.self, bytes, 24)), FuzzedMapFile.load(UInt32.self, bytes, 16)))
            }
        }
        check(maps.count >= 3, "the fixture should have at least 3 layer maps, has \(maps.count)")
        return Pristine(files: files.sorted { $0.0 < $1.0 }, maps: maps.sorted { $0.0 < $1.0 })
    }

    private static func write(_ store: BlockStore, _ volumeID: String, blocks: [Int]) throws {
        let handle = try store.open(volumeID: volumeID)
        for block in blocks {
            let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: block + 1), count: 4096)
            try bytes.withUnsafeBytes { try handle.write($0, at: UInt64(block * 4096)) }
        }
        try handle.close()
    }

    private static func restore(_ pristine: Pristine, into live: String) {
        for (path, bytes) in pristine.files {
            let full = live + "/" + path
            try? FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            check(FileManager.default.createFile(atPath: full, contents: Data(bytes)), "cannot restore \(full)")
        }
    }
}
