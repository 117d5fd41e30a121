import Foundation
import StrataTestSupport
import Testing

/// Other gRPC implementations must be able to talk to the driver: kubelet and every CSI sidecar
/// use grpc-go; tooling often uses Python's grpcio.
@Suite("Interop with other gRPC implementations", .serialized, .blockingTolerant)
struct InteropTests {
    struct GoClientSummary: Decodable {
        let calls: Int
        let errors: Int
        let first_error: String
        let dials: Int
        let seconds: Double
    }

    @Test("A Python grpcio client calls Identity and sees proper status codes")
    func pythonClient() throws {
        let driver = try DriverProcess.started()
        defer { driver.stop() }
        let output = try ExternalTool.run("python3", [
            Repository.path("Tests/CSIDriverTests/Interop/python_client.py"), Repository.path("proto"), driver.socketPath,
        ])
        let json = try #require(output.split(separator: "\n").last.map { Data($0.utf8) })
        let result = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any], "output: \(output)")
        #expect(result["name"] as? String == "strata.csi.dev")
        #expect(result["ready"] as? Bool == true)
        #expect((result["services"] as? [String])?.contains("CONTROLLER_SERVICE") == true)
        #expect(["INVALID_ARGUMENT", "UNIMPLEMENTED"].contains(result["delete_without_id"] as? String ?? ""), "got \(result)")
    }

    @Test("A grpc-go client makes 2,000 calls on one connection without being disconnected")
    func goClientIsNeverDisconnected() throws {
        let client = try GoClient.build()
        let driver = try DriverProcess.started()
        defer { driver.stop() }
        let summary = try client.run(socket: driver.socketPath, calls: 2000)
        #expect(summary.errors == 0, "first error: \(summary.first_error)")
        #expect(summary.dials == 1, "the client had to reconnect: a csi-lib-utils sidecar would have exited")
        #expect(summary.seconds < 60)
    }

    /// Shows the harness above can fail: without the PING responder, swift-nio-http2's flood
    /// protection sends GOAWAY to grpc-go's BDP pings and the client has to reconnect.
    @Test("Without the PING responder the same client is disconnected")
    func goClientIsDisconnectedWithoutResponder() throws {
        let client = try GoClient.build()
        let driver = try DriverProcess.started(arguments: ["--disable-ping-responder"])
        defer { driver.stop() }
        let summary = try client.run(socket: driver.socketPath, calls: 2000)
        #expect(summary.dials > 1)
    }
}

/// The Go client in Interop/go, built against Debian's grpc-go with stubs generated from proto/csi.proto.
struct GoClient {
    let binary: String

    /// Built once per test process, in GOPATH mode because there is no module proxy here.
    nonisolated(unsafe) private static var built: Result<GoClient, any Error>?
    private static let lock = NSLock()

    static func build() throws -> GoClient {
        lock.lock()
        defer { lock.unlock() }
        if let built { return try built.get() }
        let result = Result { try compile() }
        built = result
        return try result.get()
    }

    private static func compile() throws -> GoClient {
        let workspace = try GoWorkspace(named: "client")
        try ExternalTool.run("protoc", ["--proto_path=\(Repository.path("proto"))", "--go_out=\(workspace.path)/src",
                                        "--go-grpc_out=\(workspace.path)/src", "csi.proto"])
        return GoClient(binary: try workspace.build(package: "strataclient", from: ["Tests/CSIDriverTests/Interop/go/client.go"]))
    }

    func run(socket: String, calls: Int) throws -> InteropTests.GoClientSummary {
        let output = try ExternalTool.run(binary, ["-socket", socket, "-calls", "\(calls)"])
        let line = output.split(separator: "\n").last.map(String.init) ?? ""
        return try JSONDecoder().decode(InteropTests.GoClientSummary.self, from: Data(line.utf8))
    }
}
