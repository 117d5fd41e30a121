@testable import CSIDriver
import CSIProto
import CSIValidation
import Foundation
import StrataTestSupport
import Testing

/// Tests/DeployTests derives what the sidecars need from Kubernetes (issue 22: a provisioner
/// blocked on VolumeAttachments it was not allowed to list) from the capabilities in
/// Tests/DeployTests/deploycheck/driver_capabilities.json. This keeps that file the driver's
/// own answer, for every profile, mode and --controller-expansion, so the deploy checks can
/// never reason about a driver other than this one.
@Suite("Capabilities: the deploy checks' fact file", .blockingTolerant)
struct CapabilityFactTests {
    static let factFile = Repository.root.appending(path: "Tests/DeployTests/deploycheck/driver_capabilities.json")

    struct Facts: Decodable {
        struct Entry: Decodable {
            struct When: Decodable {
                var profiles: [String]?
                var modes: [String]?
                var controllerExpansion: Bool?

                enum CodingKeys: String, CodingKey {
                    case profiles, modes
                    case controllerExpansion = "controller_expansion"
                }
            }
            var capability: String
            var when: When?
        }
        var profiles: [String]
        var modes: [String]
        var plugin: [Entry]
        var controller: [Entry]
        var node: [Entry]
        var groupController: [Entry]
        var accessModes: AccessModes

        /// Kubernetes access modes: the CSI modes the sidecars send for each, and which ones
        /// the driver accepts with each volume mode.
        struct AccessModes: Decodable {
            var csi: [String: [String]]
            var accepted: [String: [String]]
        }

        enum CodingKeys: String, CodingKey {
            case profiles, modes, plugin, controller, node
            case groupController = "group_controller"
            case accessModes = "access_modes"
        }

        func advertised(_ entries: [Entry], profile: String, mode: String, expansion: Bool) -> Set<String> {
            Set(entries.filter { entry in
                guard let when = entry.when else { return true }
                return (when.profiles?.contains(profile) ?? true) && (when.modes?.contains(mode) ?? true)
                    && (when.controllerExpansion.map { $0 == expansion } ?? true)
            }.map(\.capability))
        }
    }

    /// The proto name of a generated enum case: `publishUnpublishVolume` → PUBLISH_UNPUBLISH_VOLUME.
    static func protoName(_ value: some Any) -> String {
        var name = ""
        for character in String(describing: value) {
            if character.isUppercase || character.isNumber, !name.isEmpty { name.append("_") }
            name.append(character.uppercased())
        }
        return name
    }

    @Test("driver_capabilities.json lists exactly what the driver advertises")
    func factFileMatchesDriver() async throws {
        let facts = try JSONDecoder().decode(Facts.self, from: Data(contentsOf: Self.factFile))
        #expect(facts.profiles.sorted() == DriverConfiguration.CapabilityProfile.allCases.map(\.rawValue).sorted())
        #expect(facts.modes.sorted() == DriverConfiguration.Mode.allCases.map(\.rawValue).sorted())
        for profile in DriverConfiguration.CapabilityProfile.allCases {
            for mode in DriverConfiguration.Mode.allCases {
                for expansion in [true, false] {
                    var configuration = DriverConfiguration(nodeID: "n", stateDirectory: "/nonexistent", mode: mode)
                    configuration.capabilityProfile = profile
                    configuration.controllerExpansion = expansion
                    let label = "\(profile.rawValue) \(mode.rawValue) expansion=\(expansion)"
                    let plugin = Set(IdentityService.capabilities(for: configuration).map { Self.protoName($0.service.type) })
                    #expect(plugin == facts.advertised(facts.plugin, profile: profile.rawValue, mode: mode.rawValue, expansion: expansion), "\(label)")
                    let controller = mode.servesController
                        ? Set(ControllerService.capabilities(profile: profile, expansion: expansion).map { Self.protoName($0) }) : []
                    #expect(controller == facts.advertised(facts.controller, profile: profile.rawValue, mode: mode.rawValue, expansion: expansion), "\(label)")
                }
            }
        }
        // Node and group controller capabilities depend on no flag: ask a running driver.
        try await InProcessDriver.with(mode: .all) { driver in
            let node = Set(try await driver.node.nodeGetCapabilities(.init()).capabilities.map { Self.protoName($0.rpc.type) })
            #expect(node == facts.advertised(facts.node, profile: "current", mode: "all", expansion: true))
            let group = Set(try await driver.groupController.groupControllerGetCapabilities(.init()).capabilities.map { Self.protoName($0.rpc.type) })
            #expect(group == facts.advertised(facts.groupController, profile: "current", mode: "all", expansion: true))
        }
    }

    /// The deploy checks refuse an example or StorageProfile whose access mode and volume mode
    /// the driver would refuse at CreateVolume (RWX Filesystem, say) from the fact file's
    /// `access_modes`; this keeps that table the driver's own rule, for every CSI mode the
    /// sidecars may send for each Kubernetes access mode.
    @Test("driver_capabilities.json's access modes are the ones VolumeCapabilityRules accepts")
    func accessModeFactsMatchDriver() throws {
        let facts = try JSONDecoder().decode(Facts.self, from: Data(contentsOf: Self.factFile))
        #expect(Set(facts.accessModes.accepted.keys) == ["Block", "Filesystem"])
        #expect(Set(facts.accessModes.csi.keys) == ["ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany", "ReadWriteMany"])
        for volumeMode in facts.accessModes.accepted.keys {
            for (kubernetesMode, csiModes) in facts.accessModes.csi {
                let listed = facts.accessModes.accepted[volumeMode]?.contains(kubernetesMode) ?? false
                for name in csiModes {
                    let mode = try #require(Csi_V1_VolumeCapability.AccessMode.Mode.allCases.first { Self.protoName($0) == name },
                                            "\(name) is not a CSI access mode")
                    let capability = Csi_V1_VolumeCapability.with {
                        if volumeMode == "Block" {
                            $0.block = .init()
                        } else {
                            $0.mount = .with { $0.fsType = VolumeCapabilityRules.defaultFilesystem }
                        }
                        $0.accessMode.mode = mode
                    }
                    let reason = VolumeCapabilityRules.unsupportedReason(capability)
                    #expect((reason == nil) == listed,
                            "\(kubernetesMode) (\(name)) \(volumeMode): the fact file says \(listed ? "accepted" : "refused"), the driver \(reason.map { "refuses it: \($0)" } ?? "accepts it")")
                }
            }
        }
    }

    @Test("No attach step is advertised, in any profile")
    func noAttachStep() {
        for profile in DriverConfiguration.CapabilityProfile.allCases {
            let types = ControllerService.capabilities(profile: profile, expansion: true)
            #expect(!types.contains(.publishUnpublishVolume) && !types.contains(.publishReadonly)
                    && !types.contains(.listVolumesPublishedNodes), "\(profile)")
        }
        #expect(Self.protoName(Csi_V1_ControllerServiceCapability.RPC.TypeEnum.publishUnpublishVolume) == "PUBLISH_UNPUBLISH_VOLUME")
    }
}
