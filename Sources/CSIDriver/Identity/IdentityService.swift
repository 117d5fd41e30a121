import CSIProto
import GRPCCore
import SwiftProtobuf

/// CSI Identity: who the plugin is, what it can do, and whether it is ready.
struct IdentityService: Csi_V1_Identity.SimpleServiceProtocol {
    let driverName: String
    let mode: DriverConfiguration.Mode
    let readiness: Readiness

    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        .with {
            $0.name = driverName
            $0.vendorVersion = DriverConfiguration.version
        }
    }

    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_GetPluginCapabilitiesResponse {
        .with { $0.capabilities = Self.capabilities(for: mode) }
    }

    func probe(request: Csi_V1_ProbeRequest, context: ServerContext) async throws -> Csi_V1_ProbeResponse {
        .with { $0.ready = Google_Protobuf_BoolValue(readiness.isReady) }
    }

    /// Only what works: each capability is added in the commit that makes it true.
    static func capabilities(for mode: DriverConfiguration.Mode) -> [Csi_V1_PluginCapability] {
        var services: [Csi_V1_PluginCapability.Service.TypeEnum] = []
        if mode.servesController {
            services.append(.controllerService)
        }
        return services.map { type in .with { $0.service = .with { $0.type = type } } }
    }
}
