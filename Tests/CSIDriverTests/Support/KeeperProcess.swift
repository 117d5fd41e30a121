#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import FuseKeeperProtocol

/// The real `strata-fuse-keeper`, on a socket in a test directory.
final class KeeperProcess: @unchecked Sendable {
    let socketPath: String
    let logPath: String
    private let process = Process()

    init(directory: String) throws {
        socketPath = directory + "/fuse-keeper.sock"
        logPath = directory + "/keeper.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let binary = (DriverProcess.binaryPath as NSString).deletingLastPathComponent + "/strata-fuse-keeper"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--socket", socketPath]
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = ContinuousClock.now + .seconds(10)
        while (try? FuseKeeperClient(socketPath: socketPath).list())?.isEmpty == nil {
            guard process.isRunning, ContinuousClock.now < deadline else { throw POSIXError(.ECONNREFUSED) }
            usleep(10_000)
        }
    }

    /// What the keeper holds now (the descriptors it hands out are closed again).
    func heldVolumes() throws -> [String] {
        try FuseKeeperClient(socketPath: socketPath).list().map { item in
            close(item.descriptor)
            return item.entry.volumeID
        }.sorted()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func kill(_ signal: Int32 = SIGKILL) {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    deinit { kill(SIGTERM) }
}
