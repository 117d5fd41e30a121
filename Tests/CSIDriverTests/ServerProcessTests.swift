#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// The driver as an operator runs it: the real binary on a real socket.
@Suite("strata-csi process", .blockingTolerant)
struct ServerProcessTests {
    @Test("Identity answers over the socket")
    func identity() async throws {
        let driver = try DriverProcess.started()
        defer { driver.stop() }
        try await driver.withClient { client in
            let identity = Csi_V1_Identity.Client(wrapping: client)
            let info = try await identity.getPluginInfo(.init())
            #expect(info.name == "strata.csi.dev")
            #expect(info.vendorVersion == "0.1.0")

            let capabilities = try await identity.getPluginCapabilities(.init())
            let services = capabilities.capabilities.map(\.service.type)
            #expect(services.contains(.controllerService))

            let probe = try await identity.probe(.init())
            #expect(probe.hasReady && probe.ready.value)
        }
    }

    @Test("A node-only process does not advertise the controller service")
    func nodeModeCapabilities() async throws {
        let driver = try DriverProcess.started(arguments: ["--mode", "node"])
        defer { driver.stop() }
        let services = try await driver.withClient { client in
            try await Csi_V1_Identity.Client(wrapping: client).getPluginCapabilities(.init()).capabilities.map(\.service.type)
        }
        #expect(!services.contains(.controllerService))
    }

    @Test("The socket is not world-accessible")
    func socketPermissions() throws {
        let driver = try DriverProcess.started()
        defer { driver.stop() }
        var status = stat()
        #expect(stat(driver.socketPath, &status) == 0)
        #expect(status.st_mode & S_IFMT == S_IFSOCK)
        #expect(status.st_mode & 0o007 == 0, "mode \(String(status.st_mode & 0o777, radix: 8)) lets other users connect")
    }

    @Test("A stale socket left by a dead process is replaced")
    func staleSocketIsReplaced() async throws {
        let directory = try TemporaryDirectory()
        let stalePath = directory.path + "/csi.sock"
        try makeStaleSocket(at: stalePath)
        #expect(!DriverProcess.socketAcceptsConnections(stalePath))

        let driver = try DriverProcess.started(directory: directory)
        defer { driver.stop() }
        let info = try await driver.withClient { try await Csi_V1_Identity.Client(wrapping: $0).getPluginInfo(.init()) }
        #expect(info.name == "strata.csi.dev")
    }

    @Test("A live socket is not taken over")
    func liveSocketIsRefused() throws {
        let first = try DriverProcess.started()
        defer { first.stop() }
        let second = try DriverProcess(directory: first.directory)
        let status = try second.waitForExit()
        #expect(status != 0)
        #expect(second.log.contains("live socket"), "log: \(second.log)")
        #expect(DriverProcess.socketAcceptsConnections(first.socketPath))
    }

    @Test("A regular file at the endpoint is refused, not deleted")
    func regularFileIsRefused() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/csi.sock"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: path))

        let driver = try DriverProcess(directory: directory)
        let status = try driver.waitForExit()
        #expect(status == 2)
        #expect(driver.log.contains("not a socket"), "log: \(driver.log)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "precious")
    }

    @Test("Only unix endpoints are accepted", arguments: ["tcp://127.0.0.1:10000", "/tmp/plain.sock", "unix://"])
    func nonUnixEndpointIsRefused(endpoint: String) throws {
        let directory = try TemporaryDirectory()
        let driver = try DriverProcess(arguments: ["--endpoint", endpoint], directory: directory)
        #expect(try driver.waitForExit() == 2)
        #expect(driver.log.contains("cannot listen"), "log: \(driver.log)")
    }

    @Test("SIGTERM and SIGINT stop the driver cleanly and remove the socket", arguments: [SIGTERM, SIGINT])
    func signalStops(signal number: Int32) throws {
        let driver = try DriverProcess.started()
        driver.signal(number)
        let status = try driver.waitForExit()
        #expect(status == 0, "log: \(driver.log)")
        #expect(!FileManager.default.fileExists(atPath: driver.socketPath))
        #expect(driver.log.contains("strata-csi stopped"))
    }

    /// Binds a socket and closes it without unlinking: what a killed driver leaves behind.
    private func makeStaleSocket(at path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8.prefix($0.count - 1)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        #expect(bound == 0)
    }
}
