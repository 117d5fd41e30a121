import Foundation
import StrataTestSupport
import Testing
@testable import BlockStore

/// Thousands of random operations, each seed replayable, with every read compared byte for byte
/// against an in-memory model of every volume and snapshot.
@Suite(.blockingTolerant) struct ModelBasedTests {
    /// The model: what every volume and snapshot must read as.
    struct Model {
        struct VolumeState {
            var id: String
            var bytes: [UInt8]
            var clusterSize: Int
            var handle: VolumeHandle?
            /// Per earlier snapshot of its chain: the clusters written or discarded since.
            var touched: [String: Set<Int>] = [:]
        }

        var volumes: [String: VolumeState] = [:]
        var snapshots: [String: (id: String, bytes: [UInt8])] = [:]
        /// Per snapshot: its cluster size and, per earlier snapshot of its chain, what was touched between.
        var snapshotHistory: [String: (clusterSize: Int, touched: [String: Set<Int>])] = [:]

        mutating func touch(_ name: String, offset: Int, length: Int) {
            guard length > 0, let clusterSize = volumes[name]?.clusterSize else { return }
            let clusters = Set(offset / clusterSize...(offset + length - 1) / clusterSize)
            for key in volumes[name]!.touched.keys { volumes[name]!.touched[key]!.formUnion(clusters) }
        }
    }

    final class Run {
        let directory: TemporaryDirectory
        var store: BlockStore
        var model = Model()
        var generator: SeededGenerator
        var counter = 0
        var log: [String] = []

        init(seed: UInt64) throws {
            directory = try TemporaryDirectory(.fast)
            generator = SeededGenerator(seed: seed)
            store = try BlockStore(directory: directory.path, options: Self.options)
        }

        static let options = testOptions(soft: 4, hard: 10, background: true)

        func random(_ range: Range<Int>) -> Int { Int.random(in: range, using: &generator) }
        func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[random(0..<items.count)] }

        func handle(_ name: String) throws -> VolumeHandle {
            if let handle = model.volumes[name]!.handle { return handle }
            let handle = try store.open(volumeID: model.volumes[name]!.id)
            model.volumes[name]!.handle = handle
            return handle
        }

        func closeHandle(_ name: String) throws {
            try model.volumes[name]?.handle?.close()
            model.volumes[name]?.handle = nil
        }

        /// A range inside `size`, biased towards cluster edges and small lengths.
        func range(size: Int, clusterSize: Int) -> (Int, Int) {
            var offset = random(0..<size)
            if random(0..<3) == 0 { offset = min(size - 1, (offset / clusterSize) * clusterSize + [0, 1, clusterSize - 1][random(0..<3)]) }
            let length = min(size - offset, 1 + random(0..<(random(0..<4) == 0 ? 3 * clusterSize : 5000)))
            return (offset, length)
        }

        func step() throws {
            counter += 1
            let volumeNames = model.volumes.keys.sorted()
            let snapshotNames = model.snapshots.keys.sorted()
            switch random(0..<100) {
            case 0..<30:
                guard let name = pick(volumeNames) else { return try createVolume() }
                let state = model.volumes[name]!
                let (offset, length) = range(size: state.bytes.count, clusterSize: state.clusterSize)
                let bytes = pattern(seed: UInt64(counter), count: length)
                log.append("write \(name) \(offset)+\(length)")
                try handle(name).write(bytes, at: UInt64(offset))
                model.volumes[name]!.bytes.replaceSubrange(offset..<offset + length, with: bytes)
                model.touch(name, offset: offset, length: length)
            case 30..<40:
                guard let name = pick(volumeNames) else { return }
                let state = model.volumes[name]!
                let (offset, length) = range(size: state.bytes.count, clusterSize: state.clusterSize)
                log.append("discard \(name) \(offset)+\(length)")
                try handle(name).discard(at: UInt64(offset), length: UInt64(length))
                model.volumes[name]!.bytes.replaceSubrange(offset..<offset + length, with: [UInt8](repeating: 0, count: length))
                model.touch(name, offset: offset, length: length)
            case 40..<62:
                guard let name = pick(volumeNames) else { return }
                let state = model.volumes[name]!
                let (offset, length) = range(size: state.bytes.count, clusterSize: state.clusterSize)
                log.append("read \(name) \(offset)+\(length)")
                let bytes = try handle(name).read(count: length, at: UInt64(offset))
                try expectEqual(bytes, Array(state.bytes[offset..<offset + length]), "read \(name) \(offset)+\(length)")
            case 62..<70:
                guard let name = pick(volumeNames), model.snapshots.count < 12 else { return }
                let snapshotName = "s\(counter)"
                log.append("snapshot \(name) -> \(snapshotName)")
                do {
                    let snapshot = try store.createSnapshot(name: snapshotName, of: model.volumes[name]!.id)
                    model.snapshots[snapshotName] = (snapshot.id, model.volumes[name]!.bytes)
                    model.snapshotHistory[snapshotName] = (model.volumes[name]!.clusterSize, model.volumes[name]!.touched)
                    model.volumes[name]!.touched[snapshotName] = []
                } catch let error as StoreError where error.code == .chainDepthLimit {}
            case 70..<76:
                guard model.volumes.count < 8, let snapshotName = pick(snapshotNames) else { return try createVolume() }
                let snapshot = model.snapshots[snapshotName]!
                let size = snapshot.bytes.count + (random(0..<2) == 0 ? 0 : random(0..<50_000))
                let name = "c\(counter)"
                log.append("clone \(snapshotName) -> \(name) size \(size)")
                do {
                    let volume = try store.createVolume(name: name, size: UInt64(size), source: .snapshot(id: snapshot.id))
                    model.volumes[name] = .init(
                        id: volume.id, bytes: snapshot.bytes + [UInt8](repeating: 0, count: size - snapshot.bytes.count),
                        clusterSize: Int(volume.clusterSize),
                        touched: model.snapshotHistory[snapshotName]!.touched.merging([snapshotName: []]) { $1 })
                } catch let error as StoreError where error.code == .chainDepthLimit {}
            case 76..<80:
                guard model.volumes.count < 8, let source = pick(volumeNames) else { return }
                let name = "d\(counter)"
                log.append("clone volume \(source) -> \(name)")
                do {
                    let volume = try store.createVolume(
                        name: name, size: UInt64(model.volumes[source]!.bytes.count), source: .volume(id: model.volumes[source]!.id))
                    model.volumes[name] = .init(id: volume.id, bytes: model.volumes[source]!.bytes, clusterSize: Int(volume.clusterSize),
                                                touched: model.volumes[source]!.touched)
                } catch let error as StoreError where error.code == .chainDepthLimit {}
            case 80..<84:
                try createVolume()
            case 84..<88:
                guard let name = pick(volumeNames) else { return }
                log.append("delete volume \(name)")
                try closeHandle(name)
                try store.deleteVolume(id: model.volumes[name]!.id)
                model.volumes[name] = nil
            case 88..<92:
                guard let name = pick(snapshotNames) else { return }
                log.append("delete snapshot \(name)")
                try store.deleteSnapshot(id: model.snapshots[name]!.id)
                model.snapshots[name] = nil
                model.snapshotHistory[name] = nil
            case 92..<95:
                guard let name = pick(volumeNames) else { return }
                let growth = random(0..<3) == 0 ? 0 : random(1..<40_000)
                log.append("expand \(name) +\(growth)")
                let volume = try store.expandVolume(id: model.volumes[name]!.id, to: UInt64(model.volumes[name]!.bytes.count + growth))
                model.volumes[name]!.bytes += [UInt8](repeating: 0, count: growth)
                guard volume.size == UInt64(model.volumes[name]!.bytes.count) else { throw StoreError(.corrupt, "expand returned \(volume.size)") }
            case 95:
                guard let name = pick(volumeNames) else { return }
                log.append("flatten \(name)")
                try store.flatten(volumeID: model.volumes[name]!.id)
            case 96:
                guard let name = pick(volumeNames) else { return }
                log.append("collapse \(name)")
                try store.collapsePrivateLayers(volumeID: model.volumes[name]!.id)
            case 97..<99:
                guard let name = pick(volumeNames) else { return }
                log.append("close handle \(name)")
                try closeHandle(name)
            default:
                try reopen()
            }
        }

        func createVolume() throws {
            guard model.volumes.count < 8 else { return }
            let name = "v\(counter)"
            let clusterSize = [4096, 16384, 65536][random(0..<3)]
            let size = random(1..<300_000)
            log.append("create \(name) size \(size) cluster \(clusterSize)")
            let volume = try store.createVolume(name: name, size: UInt64(size), clusterSize: UInt32(clusterSize))
            model.volumes[name] = .init(id: volume.id, bytes: [UInt8](repeating: 0, count: size), clusterSize: clusterSize)
        }

        func reopen() throws {
            log.append("reopen")
            for name in model.volumes.keys { model.volumes[name]!.handle = nil }
            store.waitForBackgroundWork()
            store.close()
            store = try BlockStore(directory: directory.path, options: Self.options)
            let report = try store.checkConsistency()
            guard report.isClean else { throw StoreError(.corrupt, "after reopen: \(report)") }
        }

        func verifyEverything() throws {
            for (name, state) in model.volumes {
                try expectEqual(try handle(name).readAll(), state.bytes, "volume \(name)")
            }
            for (name, snapshot) in model.snapshots {
                try expectEqual(try store.contents(ofSnapshot: snapshot.id), snapshot.bytes, "snapshot \(name)")
            }
            try verifyListings()
        }

        func expectEqual(_ actual: [UInt8], _ expected: [UInt8], _ what: String) throws {
            guard actual != expected else { return }
            let first = (0..<min(actual.count, expected.count)).first { actual[$0] != expected[$0] } ?? min(actual.count, expected.count)
            throw StoreError(.corrupt, "\(what) differs from the model at byte \(first) after \(log.suffix(8))")
        }
    }

    /// Operations per seed; STRATA_LONG=1 runs ten times as many.
    static let operations = ProcessInfo.processInfo.environment["STRATA_LONG"] == "1" ? 12_000 : 1200

    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func randomOperationsMatchTheModel(seed: UInt64) throws {
        let run = try Run(seed: seed)
        for number in 1...Self.operations {
            try run.step()
            if number % 250 == 0 { try run.verifyEverything() }
        }
        try run.verifyEverything()
        for name in run.model.volumes.keys { try run.closeHandle(name) }
        run.store.waitForBackgroundWork()
        let report = try run.store.checkConsistency()
        #expect(report.isClean, "\(report)")
        // Deleting everything leaves no layer behind.
        for state in run.model.volumes.values { try run.store.deleteVolume(id: state.id) }
        for snapshot in run.model.snapshots.values { try run.store.deleteSnapshot(id: snapshot.id) }
        #expect(try run.store.layerCount() == 0)
        #expect(try run.store.checkConsistency().isClean)
    }
}
