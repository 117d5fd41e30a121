#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import StrataTestSupport

/// The real `strata-csi` binary, started on a private socket and state directory.
final class DriverProcess: @unchecked Sendable {
    let directory: TemporaryDirectory
    let socketPath: String
    let logPath: String
    private let process = Process()

    /// The binary `swift build` put next to the test bundle (when there is none, a path that does
    /// not exist: starting it fails).
    static var binaryPath: String { BuildProducts.path(of: "strata-csi") ?? "/strata-csi" }

    /// Starts the driver and waits until its socket accepts connections.
    init(arguments extra: [String] = [], directory: TemporaryDirectory? = nil, socketName: String = "csi.sock") throws {
        self.directory = try directory ?? TemporaryDirectory()
        socketPath = self.directory.path + "/" + socketName
        logPath = self.directory.path + "/driver.log"
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else { throw POSIXError(.EIO) }
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = ["--endpoint", "unix://\(socketPath)", "--state-dir", self.directory.path + "/state",
                             "--nodeid", "test-node", "--grace-period", "2"] + extra
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// Starts the driver and waits for it to serve, failing with its log if it does not.
    static func started(arguments: [String] = [], directory: TemporaryDirectory? = nil) throws -> DriverProcess {
        let driver = try DriverProcess(arguments: arguments, directory: directory)
        try driver.waitUntilListening()
        return driver
    }

    func waitUntilListening(timeout: Duration = .seconds(30)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !process.isRunning { throw DriverProcessError.exited(status: process.terminationStatus, log: log) }
            if Self.socketAcceptsConnections(socketPath), log.contains("listening") { return }
            usleep(20_000)
        }
        throw DriverProcessError.notListening(log: log)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var pid: pid_t { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for the process to end and returns its exit status (or -signal if it was killed).
    func waitForExit(timeout: Duration = .seconds(30)) throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { throw DriverProcessError.stillRunning(log: log) }
            usleep(10_000)
        }
        return process.terminationReason == .uncaughtSignal ? -process.terminationStatus : process.terminationStatus
    }

    /// Stops the driver with SIGTERM and waits for it, so no test leaves a process behind.
    func stop() {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if (try? waitForExit(timeout: .seconds(20))) == nil {
            signal(SIGKILL)
            _ = try? waitForExit()
        }
    }

    deinit { stop() }

    /// Runs `body` with a gRPC client connected to the driver's socket.
    func withClient<Result: Sendable>(
        _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: .http2NIOPosix(target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext),
            handleClient: body
        )
    }

    static func socketAcceptsConnections(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8.prefix($0.count - 1)) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}

enum DriverProcessError: Error, CustomStringConvertible {
    case exited(status: Int32, log: String)
    case notListening(log: String)
    case stillRunning(log: String)

    var description: String {
        switch self {
        case .exited(let status, let log): "strata-csi exited with status \(status):\n\(log)"
        case .notListening(let log): "strata-csi did not start listening:\n\(log)"
        case .stillRunning(let log): "strata-csi did not exit:\n\(log)"
        }
    }
}
