import BlockStore
import Foundation

/// The random operations of the crash worker, journaled before (`?`) and after (`!`) each step.
struct CrashWorkload {
    let store: BlockStore
    let journal: CrashJournalWriter
    let seed: UInt64
    private var generator: SplitMix
    private var volumes: [String: (id: String, size: UInt64)] = [:]
    private var snapshots: [String: (id: String, size: UInt64)] = [:]
    private var handles: [String: VolumeHandle] = [:]
    private var counter = 0

    init(store: BlockStore, journal: CrashJournalWriter, seed: UInt64) {
        self.store = store
        self.journal = journal
        self.seed = seed
        generator = SplitMix(state: seed)
    }

    mutating func discoverExisting() throws {
        for volume in try store.listVolumes(after: nil, limit: 0).items { volumes[volume.name] = (volume.id, volume.size) }
        for snapshot in try store.listSnapshots(after: nil, limit: 0).items { snapshots[snapshot.name] = (snapshot.id, snapshot.size) }
    }

    private mutating func random(_ range: Range<Int>) -> Int { Int(generator.next() % UInt64(range.count)) + range.lowerBound }

    private mutating func pick(_ names: Dictionary<String, (id: String, size: UInt64)>.Keys) -> String? {
        let sorted = names.sorted()
        return sorted.isEmpty ? nil : sorted[random(0..<sorted.count)]
    }

    private mutating func handle(_ name: String) throws -> VolumeHandle {
        if let handle = handles[name] { return handle }
        let handle = try store.open(volumeID: volumes[name]!.id)
        handles[name] = handle
        return handle
    }

    mutating func closeAll() {
        for handle in handles.values { try? handle.close() }
        handles = [:]
    }

    mutating func step() throws {
        counter += 1
        let tag = "\(seed)-\(counter)"
        guard let volume = pick(volumes.keys) else { return try create("v\(tag)") }
        let size = volumes[volume]!.size
        switch random(0..<100) {
        case 0..<55:
            let offset = UInt64(random(0..<Int(size)))
            let length = min(size - offset, UInt64(1 + random(0..<(random(0..<4) == 0 ? 100_000 : 9000))))
            let patternSeed = generator.next()
            journal.record("W \(volume) \(offset) \(length) \(patternSeed)")
            let target = try handle(volume)
            try CrashPattern.bytes(seed: patternSeed, count: Int(length)).withUnsafeBytes { try target.write($0, at: offset) }
        case 55..<62:
            let offset = UInt64(random(0..<Int(size)))
            let length = min(size - offset, UInt64(1 + random(0..<150_000)))
            journal.record("D \(volume) \(offset) \(length)")
            try handle(volume).discard(at: offset, length: length)
        case 62..<78:
            try handle(volume).flush()
            journal.record("F! \(volume)", durable: true)
        case 78..<80:
            if let handle = handles.removeValue(forKey: volume) {
                try handle.close()
                journal.record("F! \(volume) close", durable: true)
            }
        case 80..<85:
            guard snapshots.count < 8 else { return try deleteSnapshot() }
            let name = "s\(tag)"
            journal.record("S? \(name) \(volume)")
            let snapshot = try store.createSnapshot(name: name, of: volumes[volume]!.id)
            snapshots[name] = (snapshot.id, snapshot.size)
            journal.record("S! \(name)", durable: true)
        case 85..<89:
            guard volumes.count < 6, let source = pick(snapshots.keys) else { return try deleteVolume() }
            let name = "c\(tag)"
            let cloneSize = snapshots[source]!.size + UInt64(random(0..<2) * random(0..<200_000))
            journal.record("C? \(name) \(source) \(cloneSize)")
            do {
                let clone = try store.createVolume(name: name, size: cloneSize, source: .snapshot(id: snapshots[source]!.id))
                volumes[name] = (clone.id, clone.size)
                journal.record("C! \(name)", durable: true)
            } catch let error as StoreError where error.code == .chainDepthLimit {
                journal.record("C- \(name)")
            }
        case 89..<91:
            guard volumes.count < 6 else { return try deleteVolume() }
            let name = "k\(tag)"
            journal.record("K? \(name) \(volume)")
            do {
                let clone = try store.createVolume(name: name, size: size, source: .volume(id: volumes[volume]!.id))
                volumes[name] = (clone.id, clone.size)
                journal.record("K! \(name)", durable: true)
            } catch let error as StoreError where error.code == .chainDepthLimit {
                journal.record("K- \(name)")
            }
        case 91..<93:
            guard volumes.count < 6 else { return try deleteVolume() }
            try create("v\(tag)")
        case 93..<95:
            try deleteVolume()
        case 95..<97:
            try deleteSnapshot()
        case 97..<99:
            let newSize = size + UInt64(random(1..<300_000))
            journal.record("E? \(volume) \(newSize)")
            _ = try store.expandVolume(id: volumes[volume]!.id, to: newSize)
            volumes[volume]!.size = newSize
            journal.record("E! \(volume)", durable: true)
        default:
            if random(0..<2) == 0 {
                journal.record("L? \(volume)")
                try store.flatten(volumeID: volumes[volume]!.id)
                journal.record("L! \(volume)")
            } else {
                journal.record("P? \(volume)")
                do {
                    try store.collapsePrivateLayers(volumeID: volumes[volume]!.id)
                } catch let error as StoreError where error.code == .busy {
                    // A background flatten changed the chain meanwhile: nothing changed.
                }
                journal.record("P! \(volume)")
            }
        }
    }

    private mutating func create(_ name: String) throws {
        let size = UInt64(64 * 1024 + random(0..<600_000))
        let clusterSize = [4096, 16384, 65536][random(0..<3)]
        journal.record("N? \(name) \(size) \(clusterSize)")
        let volume = try store.createVolume(name: name, size: size, clusterSize: UInt32(clusterSize))
        volumes[name] = (volume.id, volume.size)
        journal.record("N! \(name)", durable: true)
    }

    private mutating func deleteVolume() throws {
        guard volumes.count > 1, let name = pick(volumes.keys) else { return }
        try handles.removeValue(forKey: name)?.close()
        journal.record("X? V \(name)")
        try store.deleteVolume(id: volumes[name]!.id)
        volumes[name] = nil
        journal.record("X! V \(name)", durable: true)
    }

    private mutating func deleteSnapshot() throws {
        guard let name = pick(snapshots.keys) else { return }
        journal.record("X? S \(name)")
        try store.deleteSnapshot(id: snapshots[name]!.id)
        snapshots[name] = nil
        journal.record("X! S \(name)", durable: true)
    }
}

/// SplitMix64, so a seed replays the same workload.
struct SplitMix {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
