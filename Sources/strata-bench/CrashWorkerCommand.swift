import ArgumentParser
import BlockStore
import Foundation
import Glibc

/// The child process of the crash test: runs a random mixed workload on a store forever and
/// journals every operation, so the test can kill it with SIGKILL at any moment and check that
/// everything a completed flush acknowledged is still there.
///
/// Journal lines (one write(2) each, O_APPEND; completion records are fsync'd):
/// `R seed` store open, workload starting · `N? name size cluster` / `N! name` create · `W name offset length seed` write ·
/// `D name offset length` discard · `F! name` flush done (`F! name close`: by closing the handle) · `S? snap volume` / `S! snap` snapshot ·
/// `C? clone snap size` / `C! clone` clone of a snapshot · `K? clone volume` / `K! clone` clone of
/// a volume · `X? V|S name` / `X! V|S name` delete · `E? name size` / `E! name` expand ·
/// `L? name` / `L! name` flatten · `P? name` / `P! name` collapse of its private layers. Written bytes are `CrashPattern.bytes(seed:count:)`.
struct CrashWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-worker", abstract: "Crash-test workload (used by the test suite).", shouldDisplay: false)

    @Option(help: "Store directory.") var dir: String
    @Option(help: "Seed of the workload.") var seed: UInt64
    @Option(help: "Journal file to append to.") var journal: String
    @Option(help: "Stop after this many operations (0: run until killed).") var operations = 0

    func run() throws {
        let journal = try CrashJournalWriter(path: journal)
        var options = StoreOptions(softChainDepthLimit: 4, hardChainDepthLimit: 12, backgroundFlatten: true)
        options.logger.logLevel = .error
        let store = try BlockStore(directory: dir, options: options)
        var workload = CrashWorkload(store: store, journal: journal, seed: seed)
        try workload.discoverExisting()
        journal.record("R \(seed)")
        var done = 0
        while operations == 0 || done < operations {
            try workload.step()
            done += 1
        }
        workload.closeAll()
        store.close()
    }
}

/// Appends journal lines; each is one write(2), so a kill never leaves half a line from a
/// completed call.
final class CrashJournalWriter {
    private let descriptor: Int32

    init(path: String) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ValidationError("cannot open journal \(path)") }
    }

    deinit { close(descriptor) }

    func record(_ line: String, durable: Bool = false) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        if durable { fsync(descriptor) }
    }
}

/// Deterministic bytes for a seed. The crash test regenerates them with the same algorithm
/// (Tests/BlockStoreTests/CrashModel.swift); keep the two identical.
enum CrashPattern {
    static func bytes(seed: UInt64, count: Int) -> [UInt8] {
        var state = seed
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            for _ in 0..<8 where index < count {
                bytes[index] = UInt8(truncatingIfNeeded: z)
                z >>= 8
                index += 1
            }
        }
        return bytes
    }
}
