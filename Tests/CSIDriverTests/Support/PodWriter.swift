#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import StrataTestSupport

/// A process standing for a pod's workload: it writes a verifiable pattern through a volume,
/// reads back what it wrote, and journals every write that completed and every fsync that
/// returned, every error, and the longest wait of any one I/O. It runs until told to stop
/// (a stop file), then checks everything it wrote once more.
///
/// `block` mode writes 4–64 KiB with O_DIRECT at aligned offsets of the device (fsync every 8);
/// `files` mode writes files of 4–128 KiB on the mounted filesystem, each fsynced and renamed
/// into place, its directory fsynced.
final class PodWriter: @unchecked Sendable {
    enum Mode: String { case block, files }

    let journalPath: String
    let stopPath: String
    private let process = Process()

    init(mode: Mode, path: String, directory: String, name: String) throws {
        journalPath = "\(directory)/\(name).journal"
        stopPath = "\(directory)/\(name).stop"
        let script = "\(directory)/pod-writer.py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: journalPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, mode.rawValue, path, journalPath, stopPath]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: journalPath + ".stderr").creatingFile())
        try process.run()
    }

    var journal: [String] {
        ((try? String(contentsOfFile: journalPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    var errors: [String] { journal.filter { $0.hasPrefix("ERR") } }
    /// Completed writes (block mode) or fsynced files (files mode).
    var completed: Int { journal.filter { $0.hasPrefix("W ") || $0.hasPrefix("E ") }.count }
    /// The longest wait of one I/O, in seconds.
    var longestWait: Double { journal.filter { $0.hasPrefix("L ") }.compactMap { Double($0.dropFirst(2)) }.max() ?? 0 }
    /// Every wait longer than 50 ms, in seconds, in order.
    var waits: [Double] { journal.filter { $0.hasPrefix("L ") }.compactMap { Double($0.dropFirst(2)) } }

    /// Waits until the writer has completed `count` more writes (or `timeout` passed).
    func waitForProgress(beyond count: Int, timeout: Duration = .seconds(20)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if completed > count { return true }
            if !process.isRunning { return false }
            usleep(5_000)
        }
        return false
    }

    /// Asks the writer to stop, waits for its final check, and returns its journal's verdict line.
    func finish(timeout: Duration = .seconds(120)) -> String? {
        FileManager.default.createFile(atPath: stopPath, contents: nil)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        return journal.last { $0.hasPrefix("V ") }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }

    /// scripts/bench/pod-writer.py, shared with scripts/bench-restart.sh.
    static var script: String {
        get throws {
            try String(contentsOf: Repository.root.appendingPathComponent("scripts/bench/pod-writer.py"), encoding: .utf8)
        }
    }
}

private extension URL {
    func creatingFile() -> URL {
        FileManager.default.createFile(atPath: path, contents: nil)
        return self
    }
}
