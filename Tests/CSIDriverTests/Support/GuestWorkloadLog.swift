import Foundation

/// What a guest's serial console said about its disk workload (scripts/guest/disk-workload.c):
/// how many writes it has made, up to which write a read-back pass found every block intact,
/// and every error line. A snapshot of the log file at one moment; read it again to see more.
struct GuestWorkloadLog: Sendable, CustomStringConvertible {
    /// Console lines, carriage returns removed.
    let lines: [String]
    /// The workload printed its start line (the kernel booted and found the disk).
    let workloadStarted: Bool
    /// The last "wrote N": writes made since the guest booted (0 before the first report).
    let writes: Int
    /// The last "verified N": every block held its last write, for all writes up to N.
    let verifiedThrough: Int
    /// How many blocks the last read-back pass found intact.
    let verifiedBlocks: Int
    /// Lines that report a failure: the workload's "ERROR ...", the kernel's I/O errors, a panic.
    let errors: [String]

    init(text: String) {
        lines = text.replacingOccurrences(of: "\r", with: "").split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        var started = false, writes = 0, verifiedThrough = 0, verifiedBlocks = 0
        var errors: [String] = []
        for line in lines {
            if line.hasPrefix("workload started") {
                started = true
            } else if line.hasPrefix("wrote "), let count = Self.firstNumber(in: line) {
                writes = count
            } else if line.hasPrefix("verified "), let count = Self.firstNumber(in: line) {
                verifiedThrough = count
                verifiedBlocks = line.split(separator: " ").first { $0.hasPrefix("blocks=") }.flatMap { Int($0.dropFirst(7)) } ?? 0
            }
            if line.contains("ERROR") || line.contains("I/O error") || line.contains("Kernel panic") {
                errors.append(line)
            }
        }
        workloadStarted = started
        self.writes = writes
        self.verifiedThrough = verifiedThrough
        self.verifiedBlocks = verifiedBlocks
        self.errors = errors
    }

    init(contentsOf path: String) {
        self.init(text: (try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
    }

    /// The last lines, for failure messages.
    func tail(_ count: Int = 15) -> String { lines.suffix(count).joined(separator: "\n") }

    var description: String {
        "writes \(writes), verified through \(verifiedThrough) (\(verifiedBlocks) blocks), \(errors.count) errors"
    }

    private static func firstNumber(in line: String) -> Int? {
        line.split(separator: " ").lazy.compactMap { Int($0) }.first
    }
}
