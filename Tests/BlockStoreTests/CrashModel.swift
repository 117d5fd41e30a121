import Foundation
import Glibc
import StrataTestSupport
@testable import BlockStore

/// What the crash test knows about a store the worker was killed in: for each volume the bytes
/// known durable plus the writes and discards issued since its last acknowledged flush, and the
/// exact contents of each snapshot. Fed from the worker's journal (format in
/// Sources/strata-bench/CrashWorkerCommand.swift), checked against the store after each kill.
struct CrashModel {
    enum PendingChange {
        case write(offset: Int, bytes: [UInt8])
        case discard(offset: Int, length: Int)
    }

    struct VolumeModel {
        var durable: [UInt8]
        var pending: [PendingChange] = []

        /// Contents once every pending change has landed.
        var settled: [UInt8] {
            var bytes = durable
            bytes.withUnsafeMutableBytes { target in
                for change in pending {
                    switch change {
                    case .write(let offset, let written):
                        written.withUnsafeBytes { (target.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    case .discard(let offset, let length):
                        memset(target.baseAddress! + offset, 0, length)
                    }
                }
            }
            return bytes
        }
    }

    /// An operation whose start is journaled but not its end: the kill came in the middle.
    enum Unfinished {
        case create(name: String, size: Int)
        case snapshot(name: String, volume: String, contents: [UInt8])
        case clone(name: String, contents: [UInt8], source: String?)
        case delete(kind: String, name: String)
        case expand(name: String, size: Int)
    }

    var volumes: [String: VolumeModel] = [:]
    var snapshots: [String: [UInt8]] = [:]
    var unfinished: Unfinished?
    var acknowledgedFlushes = 0

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Applies the journal's complete lines in order.
    mutating func apply(journal: String) throws {
        var lines = journal.split(separator: "\n", omittingEmptySubsequences: false)
        if journal.last != "\n" { lines.removeLast() }  // a torn last line was never acted on
        for line in lines where !line.isEmpty {
            try apply(line.split(separator: " ").map(String.init))
        }
    }

    private mutating func apply(_ fields: [String]) throws {
        func int(_ index: Int) -> Int { Int(fields[index])! }
        func known(_ name: String) throws -> VolumeModel {
            guard let model = volumes[name] else { throw Failure(description: "journal names unknown volume \(name)") }
            return model
        }
        let started = unfinished
        if fields[0].hasSuffix("!") || fields[0].hasSuffix("-") { unfinished = nil }
        switch (fields[0], started) {
        case ("W", _):
            _ = try known(fields[1])
            volumes[fields[1]]!.pending.append(.write(offset: int(2), bytes: crashPattern(seed: UInt64(fields[4])!, count: int(3))))
        case ("D", _):
            _ = try known(fields[1])
            volumes[fields[1]]!.pending.append(.discard(offset: int(2), length: int(3)))
        case ("F!", _):
            _ = try known(fields[1])
            settle(fields[1])
            acknowledgedFlushes += 1
        case ("N?", _): unfinished = .create(name: fields[1], size: int(2))
        case ("S?", _): unfinished = .snapshot(name: fields[1], volume: fields[2], contents: try known(fields[2]).settled)
        case ("C?", _):
            guard let contents = snapshots[fields[2]] else { throw Failure(description: "clone of unknown snapshot \(fields[2])") }
            unfinished = .clone(name: fields[1], contents: contents + [UInt8](repeating: 0, count: int(3) - contents.count), source: nil)
        case ("K?", _): unfinished = .clone(name: fields[1], contents: try known(fields[2]).settled, source: fields[2])
        case ("X?", _): unfinished = .delete(kind: fields[1], name: fields[2])
        case ("E?", _): unfinished = .expand(name: fields[1], size: int(2))
        case ("N!", .create(let name, let size)?):
            volumes[name] = VolumeModel(durable: [UInt8](repeating: 0, count: size))
        case ("S!", .snapshot(let name, let source, let contents)?):
            snapshots[name] = contents
            settle(source)
        case ("C!", .clone(let name, let contents, let source)?), ("K!", .clone(let name, let contents, let source)?):
            volumes[name] = VolumeModel(durable: contents)
            if let source { settle(source) }
        case ("X!", .delete(let kind, let name)?):
            if kind == "V" { volumes[name] = nil } else { snapshots[name] = nil }
        case ("E!", .expand(let name, let size)?):
            volumes[name]!.durable += [UInt8](repeating: 0, count: size - volumes[name]!.durable.count)
        case ("C-", _), ("K-", _), ("L?", _), ("L!", _), ("P?", _), ("P!", _), ("R", _):
            break
        default:
            throw Failure(description: "journal line \(fields) does not follow \(String(describing: started))")
        }
    }

    private mutating func settle(_ name: String) {
        guard let model = volumes[name] else { return }
        volumes[name] = VolumeModel(durable: model.settled)
    }

    /// Checks the reopened store against the model and adopts what it finds, so the next run of
    /// the worker continues from a known state. Throws on any lost or invented byte.
    mutating func verifyAndAdopt(_ store: BlockStore) throws {
        let storeVolumes = Dictionary(uniqueKeysWithValues: try store.listVolumes(after: nil, limit: 0).items.map { ($0.name, $0) })
        let storeSnapshots = Dictionary(uniqueKeysWithValues: try store.listSnapshots(after: nil, limit: 0).items.map { ($0.name, $0) })
        switch unfinished {
        case .create(let name, let size)?:
            if storeVolumes[name] != nil { volumes[name] = VolumeModel(durable: [UInt8](repeating: 0, count: size)) }
        case .snapshot(let name, let source, let contents)?:
            if storeSnapshots[name] != nil {
                snapshots[name] = contents
                settle(source)
            }
        case .clone(let name, let contents, let source)?:
            if storeVolumes[name] != nil {
                volumes[name] = VolumeModel(durable: contents)
                if let source { settle(source) }
            }
        case .delete(let kind, let name)?:
            if kind == "V" && storeVolumes[name] == nil { volumes[name] = nil }
            if kind == "S" && storeSnapshots[name] == nil { snapshots[name] = nil }
        case .expand(let name, let size)?:
            if let volume = storeVolumes[name], volume.size == UInt64(size), var model = volumes[name] {
                model.durable += [UInt8](repeating: 0, count: size - model.durable.count)
                volumes[name] = model
            }
        case nil: break
        }
        unfinished = nil
        guard Set(storeVolumes.keys) == Set(volumes.keys) else {
            throw Failure(description: "volumes: store has \(storeVolumes.keys.sorted()), model \(volumes.keys.sorted())")
        }
        guard Set(storeSnapshots.keys) == Set(snapshots.keys) else {
            throw Failure(description: "snapshots: store has \(storeSnapshots.keys.sorted()), model \(snapshots.keys.sorted())")
        }
        for (name, model) in volumes {
            let actual = try store.contents(ofVolume: storeVolumes[name]!.id)
            try check(actual, against: model, name)
            volumes[name] = VolumeModel(durable: actual)
        }
        for (name, contents) in snapshots {
            let actual = try store.contents(ofSnapshot: storeSnapshots[name]!.id)
            let same = actual.count == contents.count && actual.withUnsafeBytes { a in contents.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
            guard same else { throw Failure(description: "snapshot \(name) differs from the model") }
        }
        try verifyListings(store, ids: storeSnapshots.mapValues(\.id))
    }

    /// Every byte is its durable value, or a value a change issued after the last flush put there.
    private func check(_ actual: [UInt8], against model: VolumeModel, _ name: String) throws {
        guard actual.count == model.durable.count else {
            throw Failure(description: "volume \(name) is \(actual.count) bytes, the model \(model.durable.count)")
        }
        let unexplained: Int? = actual.withUnsafeBufferPointer { actual in
            model.durable.withUnsafeBufferPointer { durable in
                if memcmp(actual.baseAddress!, durable.baseAddress!, actual.count) == 0 { return nil }
                for index in 0..<actual.count where actual[index] != durable[index] {
                    let explained = model.pending.contains { change in
                        switch change {
                        case .write(let offset, let bytes):
                            return index >= offset && index < offset + bytes.count && bytes[index - offset] == actual[index]
                        case .discard(let offset, let length):
                            return index >= offset && index < offset + length && actual[index] == 0
                        }
                    }
                    if !explained { return index }
                }
                return nil
            }
        }
        if let index = unexplained {
            throw Failure(description: "volume \(name) byte \(index) is \(actual[index]), durable value \(model.durable[index]), no pending change explains it (\(model.pending.count) pending)")
        }
    }
}

/// The worker's byte pattern (CrashPattern in Sources/strata-bench/CrashWorkerCommand.swift):
/// SplitMix64 from the seed itself, each word's bytes in little-endian order.
func crashPattern(seed: UInt64, count: Int) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    return generator.bytes(count)
}
