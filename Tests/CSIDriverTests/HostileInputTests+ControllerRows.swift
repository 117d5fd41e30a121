import CSIProto
import GRPCCore
import Testing

/// Hostile requests to the Controller and GroupController services.
extension HostileInputTests {
    /// Ids that are not Strata's: path tricks, NUL, and other drivers' formats (EBS ids even
    /// start with `vol-`).
    static let foreignIDs: [(label: String, id: String)] = [
        ("a path", "../../etc/passwd"),
        ("a slash", "vol-1/2"),
        ("a NUL", "vol-\u{0}00000000-0000-0000-0000-000000000000"),
        ("an EBS id", "vol-0123456789abcdef0"),
        ("a GCE PD id", "projects/p/zones/us-central1-a/disks/pvc-1"),
        ("a hostpath id", "d9f1b7c4-2a6e-11ee-be56-0242ac120002"),
        ("an uppercase Strata-like id", "vol-D9F1B7C4-2A6E-11EE-BE56-0242AC120002"),
    ]
    static let tooLongID = String(repeating: "v", count: 4096)

    static func capability(_ mode: Csi_V1_VolumeCapability.AccessMode.Mode, fsType: String = "ext4", flags: [String] = []) -> Csi_V1_VolumeCapability {
        .with {
            $0.mount = .with { $0.fsType = fsType; $0.mountFlags = flags }
            $0.accessMode = .with { $0.mode = mode }
        }
    }

    /// Capabilities Strata cannot give, with a word their refusal must name.
    static let unsupportedCapabilities: [(label: String, capability: Csi_V1_VolumeCapability, hint: String)] = [
        ("MULTI_NODE_MULTI_WRITER", capability(.multiNodeMultiWriter), "access mode"),
        ("MULTI_NODE_READER_ONLY", capability(.multiNodeReaderOnly), "access mode"),
        ("MULTI_NODE_SINGLE_WRITER", capability(.multiNodeSingleWriter), "access mode"),
        ("an UNKNOWN access mode", capability(.unknown), "access mode"),
        ("no access mode", .with { $0.mount = .init() }, "access mode"),
        ("no access type", .with { $0.accessMode = .with { $0.mode = .singleNodeWriter } }, "access type"),
        ("btrfs", capability(.singleNodeWriter, fsType: "btrfs"), "filesystem"),
        ("fs type \"ext4; rm -rf /\"", capability(.singleNodeWriter, fsType: "ext4; rm -rf /"), "filesystem"),
        ("a 1 MiB fs type", capability(.singleNodeWriter, fsType: mebibyte), "filesystem"),
        ("a mount flag with a comma", capability(.singleNodeWriter, flags: ["noatime,dev"]), "mount flag"),
        ("a mount flag with a space", capability(.singleNodeWriter, flags: ["ro nosuid"]), "mount flag"),
        ("a mount flag that binds", capability(.singleNodeWriter, flags: ["bind"]), "mount flag"),
        ("a mount flag that remounts", capability(.singleNodeWriter, flags: ["remount"]), "mount flag"),
        ("a 1 MiB mount flag", capability(.singleNodeWriter, flags: [mebibyte]), "mount flag"),
    ]

    static func create(_ name: String = "x", bytes: Int64 = 16 << 20, limit: Int64 = 0,
                       _ change: (inout Csi_V1_CreateVolumeRequest) -> Void = { _ in }) -> Csi_V1_CreateVolumeRequest {
        var request = Requests.createVolume(name, bytes: bytes, limit: limit)
        request.secrets = secrets
        change(&request)
        return request
    }

    static var controllerRows: [Row] {
        var rows: [Row] = [
            Row("CreateVolume with an empty name", .invalidArgument, hint: "name") { d, _ in _ = try await d.controller.createVolume(create("")) },
            Row("CreateVolume with a 1 MiB name", .invalidArgument, hint: "name") { d, _ in _ = try await d.controller.createVolume(create(mebibyte)) },
            Row("CreateVolume with a NUL in its name", .invalidArgument, hint: "name") { d, _ in _ = try await d.controller.createVolume(create("a\u{0}b")) },
            Row("CreateVolume with a newline in its name", .invalidArgument, hint: "name") { d, _ in _ = try await d.controller.createVolume(create("a\nb")) },
            Row("CreateVolume with negative required_bytes", .invalidArgument, hint: "required_bytes") { d, _ in
                _ = try await d.controller.createVolume(create(bytes: -4096))
            },
            Row("CreateVolume with negative limit_bytes", .invalidArgument, hint: "limit_bytes") { d, _ in
                _ = try await d.controller.createVolume(create(bytes: 0, limit: -1))
            },
            Row("CreateVolume with limit below required", .invalidArgument, hint: "limit_bytes") { d, _ in
                _ = try await d.controller.createVolume(create(bytes: 2 << 20, limit: 1 << 20))
            },
            Row("CreateVolume above the pool", .resourceExhausted, hint: "pool") { d, _ in
                _ = try await d.controller.createVolume(create(bytes: .max))
            },
            Row("CreateVolume with no page-aligned size in range", .outOfRange, hint: "limit_bytes") { d, _ in
                _ = try await d.controller.createVolume(create(bytes: 1, limit: 100))
            },
            Row("CreateVolume without capabilities", .invalidArgument, hint: "volume_capabilities") { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeCapabilities = [] })
            },
            Row("CreateVolume with a 1 MiB unknown parameter", .invalidArgument, hint: "parameter") { d, _ in
                _ = try await d.controller.createVolume(create { $0.parameters = [mebibyte: "1"] })
            },
            Row("CreateVolume with clusterSize -1", .invalidArgument, hint: "clusterSize") { d, _ in
                _ = try await d.controller.createVolume(create { $0.parameters = ["clusterSize": "-1"] })
            },
            Row("CreateVolume with a 1 MiB clusterSize", .invalidArgument, hint: "clusterSize") { d, _ in
                _ = try await d.controller.createVolume(create { $0.parameters = ["clusterSize": mebibyte] })
            },
            Row("CreateVolume from a snapshot with a 4 KiB id", .invalidArgument, hint: "snapshot_id") { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeContentSource = .with { $0.snapshot = .with { $0.snapshotID = tooLongID } } })
            },
            Row("CreateVolume from a snapshot with an empty id", .invalidArgument, hint: "snapshot_id") { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeContentSource = .with { $0.snapshot = .init() } })
            },
            Row("CreateVolume from a volume id used as a snapshot id", .notFound, hint: "snapshot") { d, f in
                _ = try await d.controller.createVolume(create { $0.volumeContentSource = .with { $0.snapshot = .with { $0.snapshotID = f.volumeID } } })
            },
            Row("DeleteVolume without an id", .invalidArgument, hint: "volume_id") { d, _ in
                _ = try await d.controller.deleteVolume(.with { $0.secrets = secrets })
            },
            Row("DeleteVolume with a 4 KiB id", .invalidArgument, hint: "volume_id") { d, _ in
                _ = try await d.controller.deleteVolume(.with { $0.volumeID = tooLongID; $0.secrets = secrets })
            },
            Row("DeleteVolume of a snapshot id", nil) { d, f in
                _ = try await d.controller.deleteVolume(.with { $0.volumeID = f.snapshotID; $0.secrets = secrets })
            },
            Row("ControllerGetVolume with a 4 KiB id", .invalidArgument, hint: "volume_id") { d, _ in
                _ = try await d.controller.controllerGetVolume(.with { $0.volumeID = tooLongID })
            },
            Row("ValidateVolumeCapabilities without an id", .invalidArgument, hint: "volume_id") { d, _ in
                _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeCapabilities = [Requests.mountCapability]; $0.secrets = secrets })
            },
            Row("ValidateVolumeCapabilities without capabilities", .invalidArgument, hint: "volume_capabilities") { d, f in
                _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeID = f.volumeID; $0.secrets = secrets })
            },
            Row("ValidateVolumeCapabilities of multi-node access confirms nothing", nil) { d, f in
                let response = try await d.controller.validateVolumeCapabilities(.with {
                    $0.volumeID = f.volumeID; $0.volumeCapabilities = [capability(.multiNodeMultiWriter)]; $0.secrets = secrets
                })
                #expect(!response.hasConfirmed && response.message.contains("access mode"), "\(response)")
            },
            Row("ControllerPublishVolume without a volume id", .unimplemented, hint: "not offered") { d, _ in
                _ = try await d.controller.controllerPublishVolume(.with {
                    $0.nodeID = InProcessDriver.nodeID; $0.volumeCapability = Requests.mountCapability; $0.secrets = secrets
                })
            },
            Row("ControllerPublishVolume without a node id", .unimplemented, hint: "not offered") { d, f in
                _ = try await d.controller.controllerPublishVolume(.with { $0.volumeID = f.volumeID; $0.volumeCapability = Requests.mountCapability; $0.secrets = secrets })
            },
            Row("ControllerPublishVolume without a capability", .unimplemented, hint: "not offered") { d, f in
                _ = try await d.controller.controllerPublishVolume(.with { $0.volumeID = f.volumeID; $0.nodeID = InProcessDriver.nodeID; $0.secrets = secrets })
            },
            Row("ControllerPublishVolume to a 1 MiB node id", .unimplemented, hint: "not offered") { d, f in
                _ = try await d.controller.controllerPublishVolume(.with {
                    $0.volumeID = f.volumeID; $0.nodeID = mebibyte; $0.volumeCapability = Requests.mountCapability; $0.secrets = secrets
                })
            },
            Row("ControllerUnpublishVolume without a volume id", .unimplemented, hint: "not offered") { d, _ in
                _ = try await d.controller.controllerUnpublishVolume(.with { $0.nodeID = InProcessDriver.nodeID; $0.secrets = secrets })
            },
            Row("ControllerExpandVolume without a capacity range", .invalidArgument, hint: "capacity_range") { d, f in
                _ = try await d.controller.controllerExpandVolume(.with { $0.volumeID = f.volumeID; $0.secrets = secrets })
            },
            Row("ControllerExpandVolume with negative required_bytes", .invalidArgument, hint: "required_bytes") { d, f in
                _ = try await d.controller.controllerExpandVolume(.with {
                    $0.volumeID = f.volumeID; $0.capacityRange = .with { $0.requiredBytes = -1 }; $0.secrets = secrets
                })
            },
            Row("ControllerExpandVolume above the pool", .resourceExhausted, hint: "pool") { d, f in
                _ = try await d.controller.controllerExpandVolume(.with {
                    $0.volumeID = f.volumeID; $0.capacityRange = .with { $0.requiredBytes = .max }; $0.secrets = secrets
                })
            },
            Row("ControllerExpandVolume with a limit below the current size", .outOfRange, hint: "limit_bytes") { d, f in
                _ = try await d.controller.controllerExpandVolume(.with {
                    $0.volumeID = f.volumeID; $0.capacityRange = .with { $0.requiredBytes = 4096; $0.limitBytes = 4096 }; $0.secrets = secrets
                })
            },
            Row("ControllerExpandVolume of a foreign id", .notFound, hint: "volume") { d, _ in
                _ = try await d.controller.controllerExpandVolume(.with {
                    $0.volumeID = "vol-0123456789abcdef0"; $0.capacityRange = .with { $0.requiredBytes = 1 << 30 }; $0.secrets = secrets
                })
            },
            Row("ControllerModifyVolume", .unimplemented) { d, f in
                _ = try await d.controller.controllerModifyVolume(.with { $0.volumeID = f.volumeID; $0.mutableParameters = ["iops": "9"]; $0.secrets = secrets })
            },
            Row("ListVolumes with a garbage token", .aborted, hint: "starting_token") { d, _ in
                _ = try await d.controller.listVolumes(.with { $0.startingToken = "garbage" })
            },
            Row("ListVolumes with a negative token", .aborted, hint: "starting_token") { d, _ in
                _ = try await d.controller.listVolumes(.with { $0.startingToken = "-1" })
            },
            Row("ListVolumes with a 1 MiB token", .aborted, hint: "starting_token") { d, _ in
                _ = try await d.controller.listVolumes(.with { $0.startingToken = mebibyte })
            },
            Row("GetCapacity for multi-node access", .invalidArgument, hint: "access mode") { d, _ in
                _ = try await d.controller.getCapacity(.with { $0.volumeCapabilities = [capability(.multiNodeReaderOnly)] })
            },
            Row("GetCapacity with an unknown parameter", .invalidArgument, hint: "parameter") { d, _ in
                _ = try await d.controller.getCapacity(.with { $0.parameters = ["replicas": "3"] })
            },
        ]
        for (label, capability, hint) in unsupportedCapabilities {
            rows.append(Row("CreateVolume with \(label)", .invalidArgument, hint: hint) { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeCapabilities = [capability] })
            })
        }
        for (label, capability, _) in unsupportedCapabilities.prefix(2) {
            rows.append(Row("ControllerPublishVolume with \(label)", .unimplemented, hint: "not offered") { d, f in
                _ = try await d.controller.controllerPublishVolume(.with {
                    $0.volumeID = f.volumeID; $0.nodeID = InProcessDriver.nodeID; $0.volumeCapability = capability; $0.secrets = secrets
                })
            })
        }
        for (label, id) in foreignIDs {
            rows.append(Row("CreateVolume cloning \(label)", .notFound, hint: "volume") { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeContentSource = .with { $0.volume = .with { $0.volumeID = id } } })
            })
            rows.append(Row("DeleteVolume of \(label)", nil) { d, _ in
                _ = try await d.controller.deleteVolume(.with { $0.volumeID = id; $0.secrets = secrets })
            })
            rows.append(Row("ControllerGetVolume of \(label)", .notFound, hint: "volume") { d, _ in
                _ = try await d.controller.controllerGetVolume(.with { $0.volumeID = id })
            })
            rows.append(Row("ControllerPublishVolume of \(label)", .unimplemented, hint: "not offered") { d, _ in
                _ = try await d.controller.controllerPublishVolume(.with {
                    $0.volumeID = id; $0.nodeID = InProcessDriver.nodeID; $0.volumeCapability = Requests.mountCapability; $0.secrets = secrets
                })
            })
            rows.append(Row("ControllerUnpublishVolume of \(label)", .unimplemented, hint: "not offered") { d, _ in
                _ = try await d.controller.controllerUnpublishVolume(.with { $0.volumeID = id; $0.nodeID = InProcessDriver.nodeID; $0.secrets = secrets })
            })
            rows.append(Row("ValidateVolumeCapabilities of \(label)", .notFound, hint: "volume") { d, _ in
                _ = try await d.controller.validateVolumeCapabilities(.with { $0.volumeID = id; $0.volumeCapabilities = [Requests.mountCapability]; $0.secrets = secrets })
            })
        }
        return rows
    }
}
