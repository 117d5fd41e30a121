import CSIProto
import GRPCCore
import SwiftProtobuf

/// CSI Identity: who the plugin is, what it can do, and whether it is ready.
struct IdentityService: Csi_V1_Identity.SimpleServiceProtocol {
    let context: DriverContext

    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context _: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        .with {
            $0.name = context.configuration.driverName
            $0.vendorVersion = DriverConfiguration.version
        }
    }

    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context _: ServerContext) async throws -> Csi_V1_GetPluginCapabilitiesResponse {
        .with { $0.capabilities = Self.capabilities(for: context.configuration) }
    }

    func probe(request: Csi_V1_ProbeRequest, context _: ServerContext) async throws -> Csi_V1_ProbeResponse {
        .with { $0.ready = Google_Protobuf_BoolValue(context.isReady) }
    }

    /// Only what works: each capability is added in the commit that makes it true.
    static func capabilities(for configuration: DriverConfiguration) -> [Csi_V1_PluginCapability] {
        var services: [Csi_V1_PluginCapability.Service.TypeEnum] = [.volumeAccessibilityConstraints]
        if configuration.mode.servesController {
            services.append(.controllerService)
            if configuration.capabilityProfile.advertisesGroupController { services.append(.groupControllerService) }
        }
        if configuration.capabilityProfile.advertisesSnapshotMetadata { services.append(.snapshotMetadataService) }
        return services.map { type in .with { $0.service = .with { $0.type = type } } }
    }
}
