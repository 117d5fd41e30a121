@testable import CSIDriver
import CSIProto
import GRPCCore
import StrataTestSupport
import Testing

/// The error rows of the CSI spec's tables (and the required-field checks) for every controller
/// RPC: each answered with the spec's code, and nothing created along the way.
@Suite("Controller: error codes", .blockingTolerant)
struct ControllerErrorTableTests {
    /// What each row may refer to: an existing volume and snapshot.
    struct Fixture: Sendable {
        let volumeID: String
        let snapshotID: String
    }

    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let expected: RPCError.Code
        let call: @Sendable (InProcessDriver, Fixture) async throws -> Void
        var testDescription: String { "\(name) → \(expected)" }

        init(_ name: String, _ expected: RPCError.Code, _ call: @escaping @Sendable (InProcessDriver, Fixture) async throws -> Void) {
            self.name = name
            self.expected = expected
            self.call = call
        }
    }

    static let multiNode = Csi_V1_VolumeCapability.with { $0.mount = .init(); $0.accessMode = .with { $0.mode = .multiNodeMultiWriter } }

    static let rows: [Row] = [
        // CreateVolume
        Row("CreateVolume without a name", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.name = ""; _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume with a 2 KiB name", .invalidArgument) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume(String(repeating: "n", count: 2048)))
        },
        Row("CreateVolume without capabilities", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.volumeCapabilities = []; _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume with a multi-node access mode", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.volumeCapabilities = [multiNode]; _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume with btrfs", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.volumeCapabilities[0].mount.fsType = "btrfs"; _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume with a capability without access type", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.volumeCapabilities = [.with { $0.accessMode = .with { $0.mode = .singleNodeWriter } }]
            _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume with an unknown parameter", .invalidArgument) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", parameters: ["clustersize": "4096"]))
        },
        Row("CreateVolume with a cluster size that is not a power of two", .invalidArgument) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", parameters: ["clusterSize": "5000"]))
        },
        Row("CreateVolume with negative required_bytes", .invalidArgument) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", bytes: -1))
        },
        Row("CreateVolume with limit below required", .invalidArgument) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", bytes: 8 << 20, limit: 4 << 20))
        },
        Row("CreateVolume with a range no page-aligned size satisfies", .outOfRange) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", bytes: 4097, limit: 5000))
        },
        Row("CreateVolume from a snapshot with a limit below its size", .outOfRange) { d, f in
            _ = try await d.controller.createVolume(Requests.createVolume("x", bytes: 1 << 20, limit: 1 << 20, snapshot: f.snapshotID))
        },
        Row("CreateVolume from an unknown snapshot", .notFound) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", snapshot: "snap-00000000-0000-0000-0000-000000000000"))
        },
        Row("CreateVolume from a malformed snapshot id", .notFound) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", snapshot: "../../etc/passwd"))
        },
        Row("CreateVolume from an unknown volume", .notFound) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", volume: "vol-unknown"))
        },
        Row("CreateVolume from an empty content source", .invalidArgument) { d, _ in
            var r = Requests.createVolume("x"); r.volumeContentSource = .init(); _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume requiring another node's topology", .resourceExhausted) { d, _ in
            var r = Requests.createVolume("x")
            r.accessibilityRequirements = .with { $0.requisite = [.with { $0.segments = [DriverConfiguration.topologyKey: "elsewhere"] }] }
            _ = try await d.controller.createVolume(r)
        },
        Row("CreateVolume larger than the whole pool", .resourceExhausted) { d, _ in
            _ = try await d.controller.createVolume(Requests.createVolume("x", bytes: Int64.max / 2))
        },
        // DeleteVolume
        Row("DeleteVolume without an id", .invalidArgument) { d, _ in _ = try await d.controller.deleteVolume(.init()) },
        // CreateSnapshot
        Row("CreateSnapshot without a name", .invalidArgument) { d, f in
            _ = try await d.controller.createSnapshot(Requests.createSnapshot("", of: f.volumeID))
        },
        Row("CreateSnapshot without a source", .invalidArgument) { d, _ in
            _ = try await d.controller.createSnapshot(Requests.createSnapshot("s", of: ""))
        },
        Row("CreateSnapshot of an unknown volume", .notFound) { d, _ in
            _ = try await d.controller.createSnapshot(Requests.createSnapshot("s", of: "vol-00000000-0000-0000-0000-000000000000"))
        },
        Row("CreateSnapshot with an unknown parameter", .invalidArgument) { d, f in
            var r = Requests.createSnapshot("s", of: f.volumeID); r.parameters = ["fast": "yes"]
            _ = try await d.controller.createSnapshot(r)
        },
        Row("CreateSnapshot reusing a name for another volume", .alreadyExists) { d, f in
            let other = try await d.controller.createVolume(Requests.createVolume("other")).volume
            _ = try await d.controller.createSnapshot(Requests.createSnapshot("fixture-snap", of: other.volumeID))
        },
        // DeleteSnapshot, GetSnapshot, ListSnapshots
        Row("DeleteSnapshot without an id", .invalidArgument) { d, _ in _ = try await d.controller.deleteSnapshot(.init()) },
        Row("GetSnapshot without an id", .invalidArgument) { d, _ in _ = try await d.controller.getSnapshot(.init()) },
        Row("GetSnapshot of an unknown snapshot", .notFound) { d, _ in
            _ = try await d.controller.getSnapshot(.with { $0.snapshotID = "snap-unknown" })
        },
        Row("ListSnapshots with a garbage token", .aborted) { d, _ in
            _ = try await d.controller.listSnapshots(.with { $0.startingToken = "garbage" })
        },
        Row("ListSnapshots with negative max_entries", .invalidArgument) { d, _ in
            _ = try await d.controller.listSnapshots(.with { $0.maxEntries = -1 })
        },
        // ListVolumes, ControllerGetVolume, ValidateVolumeCapabilities
        Row("ListVolumes with a garbage token", .aborted) { d, _ in
            _ = try await d.controller.listVolumes(.with { $0.startingToken = "not-a-token" })
        },
        Row("ListVolumes with negative max_entries", .invalidArgument) { d, _ in
            _ = try await d.controller.listVolumes(.with { $0.maxEntries = -5 })
        },
        Row("ControllerGetVolume without an id", .invalidArgument) { d, _ in _ = try await d.controller.controllerGetVolume(.init()) },
        Row("ControllerGetVolume of an unknown volume", .notFound) { d, _ in
            _ = try await d.controller.controllerGetVolume(.with { $0.volumeID = "vol-unknown" })
        },
        Row("ValidateVolumeCapabilities without an id", .invalidArgument) { d, _ in
            _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeCapabilities = [Requests.mountCapability] })
        },
        Row("ValidateVolumeCapabilities without capabilities", .invalidArgument) { d, f in
            _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeID = f.volumeID })
        },
        Row("ValidateVolumeCapabilities of an unknown volume", .notFound) { d, _ in
            _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeID = "vol-unknown"; $0.volumeCapabilities = [Requests.mountCapability] })
        },
        // ControllerExpandVolume
        Row("ControllerExpandVolume without an id", .invalidArgument) { d, _ in
            _ = try await d.controller.controllerExpandVolume(.with { $0.capacityRange = .with { $0.requiredBytes = 1 << 30 } })
        },
        Row("ControllerExpandVolume without a capacity range", .invalidArgument) { d, f in
            _ = try await d.controller.controllerExpandVolume(.with { $0.volumeID = f.volumeID })
        },
        Row("ControllerExpandVolume of an unknown volume", .notFound) { d, _ in
            _ = try await d.controller.controllerExpandVolume(.with { $0.volumeID = "vol-unknown"; $0.capacityRange = .with { $0.requiredBytes = 1 << 30 } })
        },
        Row("ControllerExpandVolume with a limit below the current size", .outOfRange) { d, f in
            _ = try await d.controller.controllerExpandVolume(.with {
                $0.volumeID = f.volumeID; $0.capacityRange = .with { $0.requiredBytes = 4096; $0.limitBytes = 4096 }
            })
        },
        // Not offered
        Row("ControllerPublishVolume", .unimplemented) { d, f in
            _ = try await d.controller.controllerPublishVolume(.with {
                $0.volumeID = f.volumeID; $0.nodeID = InProcessDriver.nodeID; $0.volumeCapability = Requests.mountCapability
            })
        },
        Row("ControllerPublishVolume without a volume id", .unimplemented) { d, _ in
            _ = try await d.controller.controllerPublishVolume(.with { $0.nodeID = InProcessDriver.nodeID })
        },
        Row("ControllerUnpublishVolume", .unimplemented) { d, f in
            _ = try await d.controller.controllerUnpublishVolume(.with { $0.volumeID = f.volumeID; $0.nodeID = InProcessDriver.nodeID })
        },
        Row("ControllerModifyVolume", .unimplemented) { d, f in
            _ = try await d.controller.controllerModifyVolume(.with { $0.volumeID = f.volumeID })
        },
    ]

    @Test("Each malformed or impossible request gets the spec's code", arguments: rows)
    func row(_ row: Row) async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("fixture", bytes: 8 << 20)).volume
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("fixture-snap", of: volume.volumeID)).snapshot
            let fixture = Fixture(volumeID: volume.volumeID, snapshotID: snapshot.snapshotID)
            let volumesBefore = try driver.store.listVolumes(after: nil, limit: 0).items.count

            let code = await statusCode { try await row.call(driver, fixture) }
            #expect(code == row.expected)

            // Nothing half-made: at most the one extra volume a row creates on purpose.
            let volumesAfter = try driver.store.listVolumes(after: nil, limit: 0).items.map(\.name)
            #expect(volumesAfter.filter { $0 == "x" }.isEmpty, "a failed CreateVolume left \(volumesAfter)")
            #expect(volumesAfter.count <= volumesBefore + 1)
            #expect(try driver.store.checkConsistency().isClean)
        }
    }
}
