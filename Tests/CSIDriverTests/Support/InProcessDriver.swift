import BlockStore
@testable import CSIDriver
import CSIProto
import CSIValidation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import StrataTestSupport
import Synchronization

/// A `DriverServer` running inside the test process on a real socket, so tests can call it over
/// gRPC and also look at its store directly.
struct InProcessDriver {
    let directory: TemporaryDirectory
    let server: DriverServer
    let client: GRPCClient<HTTP2ClientTransport.Posix>

    var controller: Csi_V1_Controller.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    var identity: Csi_V1_Identity.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    var groupController: Csi_V1_GroupController.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    var node: Csi_V1_Node.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    var snapshotMetadata: Csi_V1_SnapshotMetadata.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    var store: BlockStore { get throws { try server.context.store() } }

    static let nodeID = "test-node"

    /// Serves a fresh driver for the duration of `body`.
    static func with<Result: Sendable>(
        mode: DriverConfiguration.Mode = .controller,
        directory existing: TemporaryDirectory? = nil,
        configure: (inout DriverConfiguration) -> Void = { _ in },
        _ body: (InProcessDriver) async throws -> Result
    ) async throws -> Result {
        let directory = try existing ?? TemporaryDirectory()
        var configuration = DriverConfiguration(
            nodeID: nodeID, stateDirectory: directory.path + "/state", mode: mode,
            kubeletDirectory: directory.path + "/kubelet", gracePeriod: .seconds(1),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        configure(&configuration)
        let server = try DriverServer(configuration: configuration)
        let endpoint = try UnixSocketEndpoint(parsing: "unix://\(directory.path)/csi.sock")
        let shutdown = ShutdownTrigger()
        let stopped = StopFlag()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { stopped.value.store(true, ordering: .releasing) }
                try await server.serve(on: endpoint, until: shutdown)
            }
            defer { shutdown.fire() }
            while !server.context.isReady {
                if stopped.value.load(ordering: .acquiring) {
                    try await group.next()
                    throw CSIError.internalError("the driver stopped before it was ready")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            return try await withGRPCClient(
                transport: .http2NIOPosix(target: .unixDomainSocket(path: endpoint.path), transportSecurity: .plaintext)
            ) { client in
                try await body(InProcessDriver(directory: directory, server: server, client: client))
            }
        }
    }
}

/// Builders for the requests tests send most.
enum Requests {
    static let mountCapability = Csi_V1_VolumeCapability.with {
        $0.mount = .with { $0.fsType = "ext4" }
        $0.accessMode = .with { $0.mode = .singleNodeWriter }
    }
    static let blockCapability = Csi_V1_VolumeCapability.with {
        $0.block = .init()
        $0.accessMode = .with { $0.mode = .singleNodeWriter }
    }

    static func createVolume(
        _ name: String, bytes: Int64 = 16 << 20, limit: Int64 = 0,
        snapshot: String? = nil, volume: String? = nil, parameters: [String: String] = [:]
    ) -> Csi_V1_CreateVolumeRequest {
        .with {
            $0.name = name
            $0.capacityRange = .with { $0.requiredBytes = bytes; $0.limitBytes = limit }
            $0.volumeCapabilities = [mountCapability]
            $0.parameters = parameters
            if let snapshot { $0.volumeContentSource = .with { $0.snapshot = .with { $0.snapshotID = snapshot } } }
            if let volume { $0.volumeContentSource = .with { $0.volume = .with { $0.volumeID = volume } } }
        }
    }

    static func createSnapshot(_ name: String, of volumeID: String) -> Csi_V1_CreateSnapshotRequest {
        .with { $0.name = name; $0.sourceVolumeID = volumeID }
    }
}

/// The gRPC code a call failed with, or nil if it succeeded.
func statusCode<T>(of call: () async throws -> T) async -> RPCError.Code? {
    do {
        _ = try await call()
        return nil
    } catch let error as RPCError {
        return error.code
    } catch {
        return .unknown
    }
}

private final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}
