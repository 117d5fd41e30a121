import Foundation
import Glibc
import Logging
@testable import BlockStore

/// A fresh directory, removed when the value goes away. Logic tests run on tmpfs when there is
/// room (fsync costs nothing there, so thousands of catalog commits take seconds); `onDisk`
/// forces the real filesystem, and STRATA_TEST_TMPDIR overrides both.
final class TemporaryDirectory: @unchecked Sendable {
    let path: String

    static let fastBase: String = {
        if let base = ProcessInfo.processInfo.environment["STRATA_TEST_TMPDIR"] { return base }
        if let space = try? SystemDirectory.space(of: "/dev/shm"), space.free > 1 << 30 { return "/dev/shm" }
        return "/tmp"
    }()

    init(_ label: String = "strata-store", onDisk: Bool = false) {
        let base = onDisk ? (ProcessInfo.processInfo.environment["STRATA_TEST_TMPDIR"] ?? "/tmp") : Self.fastBase
        var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(created != nil, "mkdtemp failed")
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Store options for tests: quiet, no background flatten unless asked for.
func testOptions(soft: Int = 32, hard: Int = 128, background: Bool = false) -> StoreOptions {
    var logger = Logger(label: "strata.test")
    logger.logLevel = .warning
    return StoreOptions(softChainDepthLimit: soft, hardChainDepthLimit: hard, backgroundFlatten: background, logger: logger)
}

/// SplitMix64: a small seeded generator so randomized tests replay exactly.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Deterministic bytes for a seed, different for every seed.
func pattern(seed: UInt64, count: Int) -> [UInt8] {
    var generator = SeededGenerator(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 1)
    var bytes = [UInt8](repeating: 0, count: count)
    var index = 0
    while index < count {
        var word = generator.next()
        for _ in 0..<8 where index < count {
            bytes[index] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            index += 1
        }
    }
    return bytes
}

extension VolumeHandle {
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }

    func readAll() throws -> [UInt8] {
        try read(count: Int(size), at: 0)
    }
}

extension BlockStore {
    /// Full contents of a volume, through a short-lived handle.
    func contents(ofVolume id: String) throws -> [UInt8] {
        let handle = try open(volumeID: id)
        defer { try? handle.close() }
        return try handle.readAll()
    }

    /// Full contents of a snapshot, read through a temporary clone that is deleted afterwards.
    func contents(ofSnapshot id: String) throws -> [UInt8] {
        let snapshot = try snapshot(id: id)
        let clone = try createVolume(name: "reader-\(UUID().uuidString)", size: snapshot.size, source: .snapshot(id: id))
        defer { try? deleteVolume(id: clone.id) }
        return try contents(ofVolume: clone.id)
    }

    func headLayerID(ofVolume id: String) throws -> Int64 {
        try catalog.read { try $0.volumeRow(id: id)!.headLayerID }
    }

    func layerID(ofSnapshot id: String) throws -> Int64 {
        try catalog.read { try $0.snapshotRow(id: id)!.layerID }
    }

    func parentLayerID(of layerID: Int64) throws -> Int64? {
        try catalog.read { try $0.layer(layerID)?.parentID }
    }

    func layerCount() throws -> Int {
        try catalog.read { try $0.allLayers().count }
    }
}

/// Runs `body` on `count` threads at once and rethrows the first error.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let errors = NSLock()
    nonisolated(unsafe) var firstError: (any Error)?
    DispatchQueue.concurrentPerform(iterations: count) { index in
        do {
            try body(index)
        } catch {
            errors.lock()
            if firstError == nil { firstError = error }
            errors.unlock()
        }
    }
    if let firstError { throw firstError }
}

extension StoreError.Code {
    static func of(_ error: any Error) -> StoreError.Code? { (error as? StoreError)?.code }
}

/// A boot other than this one: a dirty mark recorded with it plays a crash followed by a reboot.
let previousBoot = BootIdentity(bytes: [UInt8](repeating: 0xEE, count: 16))!
