import CSIDriver
import CSIProto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRPCCore
import Peering
import StrataTestSupport
import Testing

/// What an admin's Prometheus sees: the real binary, scraped over HTTP.
@Suite("Metrics", .blockingTolerant)
struct MetricsTests {
    @Test("--metrics-address serves every call by method and gRPC code, its duration, and what the store holds")
    func scrape() async throws {
        let driver = try DriverProcess.started(arguments: ["--metrics-address", "127.0.0.1:0"])
        defer { driver.stop() }
        let port = try #require(Self.metricsPort(in: driver.log), "no 'serving metrics' line in:\n\(driver.log)")
        try await driver.withClient { client in
            let controller = Csi_V1_Controller.Client(wrapping: client)
            let volume = try await controller.createVolume(Requests.createVolume("base")).volume.volumeID
            _ = try await controller.createVolume(Requests.createVolume("base"))  // idempotent repeat: OK again
            _ = try await controller.createSnapshot(Requests.createSnapshot("golden", of: volume))
            #expect(await statusCode { try await controller.deleteVolume(.with { $0.volumeID = "" }) } == .invalidArgument)
        }
        let (status, body) = try await Self.get(port: port, path: "/metrics")
        #expect(status == 200)
        // Parsed by Prometheus's own parser: a malformed line, a family of the wrong type or a
        // histogram whose buckets decrease fails here.
        let families = try PrometheusExposition.parse(body)
        #expect(families["strata_rpc_total"]?.type == "counter")
        #expect(families["strata_rpc_total"]?.value(["method": "CreateVolume", "code": "OK"]) == 2)
        #expect(families["strata_rpc_total"]?.value(["method": "CreateSnapshot", "code": "OK"]) == 1)
        #expect(families["strata_rpc_total"]?.value(["method": "DeleteVolume", "code": "InvalidArgument"]) == 1)
        #expect(families["strata_rpc_duration_seconds"]?.type == "histogram")
        #expect(families["strata_rpc_duration_seconds"]?.value(["method": "CreateVolume"]) == 2)
        for (gauge, value) in [("strata_store_open", 1.0), ("strata_volumes", 1), ("strata_snapshots", 1), ("strata_layers", 2), ("strata_deepest_chain", 2)] {
            #expect(families[gauge]?.type == "gauge" && families[gauge]?.value([:]) == value, "\(gauge) in:\n\(body)")
        }
        #expect(families["strata_build_info"]?.samples?.first?.labels["version"] == DriverConfiguration.version)
        #expect((families["strata_pool_free_bytes"]?.value([:]) ?? 0) > 0)

        #expect(try await Self.get(port: port, path: "/").status == 404)
    }

    @Test("a --metrics-address that is not host:port is refused before anything starts")
    func badAddress() throws {
        let driver = try DriverProcess(arguments: ["--metrics-address", "localhost"])
        let status = try driver.waitForExit()
        #expect(status != 0)
        #expect(driver.log.contains("is not host:port"), "\(driver.log)")
    }

    @Test("metrics addresses: host:port, :port for every interface, [v6]:port; anything else is refused")
    func addresses() throws {
        typealias Address = DriverConfiguration.ListenAddress
        #expect(try Address(parsing: ":9820") == Address(host: "0.0.0.0", port: 9820))
        #expect(try Address(parsing: "127.0.0.1:0") == Address(host: "127.0.0.1", port: 0))
        #expect(try Address(parsing: "[::1]:9820") == Address(host: "::1", port: 9820))
        #expect(Address(host: "::1", port: 9820).description == "[::1]:9820")
        for bad in ["localhost", "host:", "host:99999", "host:-1", ":port", ""] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try Address(parsing: bad) }
        }
    }

    private static func metricsPort(in log: String) -> Int? {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("serving metrics") }),
              let address = line.split(separator: " ").first(where: { $0.hasPrefix("address=") }),
              let port = address.split(separator: ":").last else { return nil }
        return Int(port)
    }

    private static func get(port: Int, path: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}

/// A scrape as Prometheus reads it: parsed by github.com/prometheus/common/expfmt (Debian's
/// package) in Interop/promparse, built once per test process.
struct PrometheusExposition {
    struct Family: Decodable {
        struct Sample: Decodable {
            let labels: [String: String]
            let value: Double
        }

        let type: String
        let help: String
        let samples: [Sample]?

        /// The value of the sample with exactly these labels.
        func value(_ labels: [String: String]) -> Double? {
            samples?.first { $0.labels == labels }?.value
        }
    }

    nonisolated(unsafe) private static var parser: Result<String, any Error>?
    private static let lock = NSLock()

    static func parse(_ exposition: String) throws -> [String: Family] {
        let binary = try lock.withLock {
            if parser == nil {
                parser = Result { try GoWorkspace(named: "promparse").build(package: "promparse", from: ["Tests/CSIDriverTests/Interop/promparse/main.go"]) }
            }
            return try parser!.get()
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("strata-scrape-\(UUID().uuidString)")
        try Data(exposition.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try ExternalTool.run(binary, [file.path])
        return try JSONDecoder().decode([String: Family].self, from: Data(output.utf8))
    }
}
