import Foundation
import StrataTestSupport
import Logging
@testable import BlockStore

/// Store options for tests: quiet, no background flatten unless asked for.
func testOptions(soft: Int = 32, hard: Int = 128, background: Bool = false) -> StoreOptions {
    var logger = Logger(label: "strata.test")
    logger.logLevel = .warning
    return StoreOptions(softChainDepthLimit: soft, hardChainDepthLimit: hard, backgroundFlatten: background, logger: logger)
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

/// Runs `body` on `count` threads at once and rethrows the first error (threads of their own:
/// see `OwnThreads`).
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let outcomes = OwnThreads.run(count) { index in Result { try body(index) } }
    for outcome in outcomes { try outcome.get() }
}

extension StoreError.Code {
    static func of(_ error: any Error) -> StoreError.Code? { (error as? StoreError)?.code }
}

/// A boot other than this one: a dirty mark recorded with it plays a crash followed by a reboot.
let previousBoot = BootIdentity(bytes: [UInt8](repeating: 0xEE, count: 16))!
