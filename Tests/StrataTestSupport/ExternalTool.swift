import Foundation

/// Runs a program once to its end, with an argument list (never a shell string): the tests' one
/// runner for short-lived tools (ip, losetup, mkfs, e2fsck, openssl, go, python3, the built CLI).
/// Processes a test starts and stops itself (the driver, the keeper, writers) are not for it.
/// Output goes through files, not pipes, so a tool that leaves a child holding its output
/// open cannot hang the test.
public enum ExternalTool {
    public struct Failure: Error, CustomStringConvertible {
        public let command: [String]
        public let status: Int32
        public let output: String
        public var description: String { "\(command.joined(separator: " ")) exited with \(status):\n\(output)" }

        public init(command: [String], status: Int32, output: String) {
            self.command = command
            self.status = status
            self.output = output
        }
    }

    /// Where a tool's standard error goes.
    public enum ErrorStream: Sendable {
        /// Into `output`, interleaved as the tool wrote it.
        case merged
        /// Into `errors` of its own.
        case separate
    }

    /// How a run ended, whatever the status.
    public struct Outcome: Sendable {
        public var status: Int32
        public var output: String
        /// Standard error with `.separate`; empty with `.merged`.
        public var errors: String
    }

    /// Runs `executable` (a path, or a name looked up on PATH) with `environment` laid over this
    /// process's, and returns its output (standard error included); throws `Failure` unless it
    /// exits 0.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                           in directory: String? = nil) throws -> String {
        let outcome = try self.outcome(executable, arguments, environment: environment, in: directory)
        guard outcome.status == 0 else {
            throw Failure(command: [executable] + arguments, status: outcome.status, output: outcome.output)
        }
        return outcome.output
    }

    @discardableResult
    public static func run(_ executable: String, _ arguments: String...) throws -> String {
        try run(executable, arguments)
    }

    /// Runs `executable` to its end and returns its status and output, whatever the status.
    public static func outcome(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                               in directory: String? = nil, errors: ErrorStream = .merged) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable.contains("/") ? executable : try locate(executable))
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let output = try CaptureFile()
        process.standardOutput = output.handle
        let errorFile = errors == .separate ? try CaptureFile() : nil
        process.standardError = (errorFile ?? output).handle
        try process.run()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, output: try output.text(), errors: try errorFile?.text() ?? "")
    }

    /// Looks a program up on PATH.
    public static func locate(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw Failure(command: [name], status: 127, output: "\(name) not found on PATH (scripts/test.sh installs it)")
    }

    /// A file a tool writes into, read back and removed afterwards.
    private final class CaptureFile {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("strata-tool-\(UUID().uuidString)").path
        let handle: FileHandle

        init() throws {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw POSIXError(.EIO) }
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        }

        func text() throws -> String {
            try handle.close()
            return String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        }

        deinit { try? FileManager.default.removeItem(atPath: path) }
    }
}
