import Foundation

/// Runs external tools (mkfs, blkid, resize2fs, xfs_growfs) with argument arrays, never through
/// a shell, and keeps their stderr for the error message.
enum Command {
    struct Output: Sendable {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// Where tools are looked for: the sbin directories first, as the tools we run live there.
    static let searchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"]

    /// The absolute path of `tool`, or nil when it is not installed.
    static func locate(_ tool: String) -> String? {
        if tool.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: tool) ? tool : nil }
        return searchPath.lazy.map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `tool` and returns its exit status and output, whatever the status.
    static func run(_ tool: String, _ arguments: [String]) throws -> Output {
        guard let path = locate(tool) else {
            throw NodeHostError(.unsupported, "\(tool) is not installed (looked in \(searchPath.joined(separator: ":")))")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["LC_ALL"] = "C"
        process.environment = environment
        let outputPipe = Pipe()
        let errorPipe = Pipe()
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw NodeHostError(.commandFailed, "cannot start \(path): \(error)")
        }
        // Drain stderr on another thread so a chatty tool cannot fill one pipe and block.
        let errorData = ErrorCollector()
        let reader = Thread { errorData.set(errorPipe.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let output = outputPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let standardError = errorData.wait()
        return Output(
            status: process.terminationStatus,
            standardOutput: String(decoding: output, as: UTF8.self),
            standardError: String(decoding: standardError, as: UTF8.self)
        )
    }

    /// Runs `tool` and throws `commandFailed` (with its stderr) unless it exits 0.
    @discardableResult
    static func check(_ tool: String, _ arguments: [String]) throws -> String {
        let output = try run(tool, arguments)
        guard output.status == 0 else {
            // One line: the tool's stderr (or stdout when stderr is empty), lines joined by "; ".
            let text = output.standardError.isEmpty ? output.standardOutput : output.standardError
            let detail = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }.joined(separator: "; ")
            throw NodeHostError(
                .commandFailed,
                "\(([tool] + arguments).joined(separator: " ")) exited \(output.status)" + (detail.isEmpty ? "" : ": \(detail)")
            )
        }
        return output.standardOutput
    }

    /// Hands the stderr bytes from the reader thread to the caller.
    private final class ErrorCollector: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var data = Data()
        func set(_ value: Data) {
            data = value
            done.signal()
        }
        func wait() -> Data {
            done.wait()
            return data
        }
    }
}
