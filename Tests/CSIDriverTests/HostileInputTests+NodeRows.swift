import CSIProto
import GRPCCore
import Testing

/// Hostile requests to the Node service. None of them may reach the device layer: no export,
/// loop device, format or mount happens (the suite's footprint check proves it).
extension HostileInputTests {
    /// Paths kubelet would never send, relative to the fixture's kubelet directory `k`, with a
    /// word the refusal must contain.
    static let hostilePaths: [(label: String, path: @Sendable (String) -> String, hint: String)] = [
        ("an empty path", { _ in "" }, "required"),
        ("a relative path", { _ in "kubelet/pods/p/mount" }, "absolute"),
        ("a path with ..", { k in k + "/pods/../../../etc" }, ".."),
        ("/etc", { _ in "/etc" }, "outside"),
        ("/", { _ in "/" }, "outside"),
        ("/proc/self", { _ in "/proc/self" }, "outside"),
        ("the kubelet directory itself", { k in k }, "outside"),
        ("a sibling sharing its prefix", { k in k + "-evil/pods/p" }, "outside"),
        ("a path with a NUL", { k in k + "/pods/a\u{0}b" }, "path"),
        ("a 1 MiB path", { k in k + "/" + mebibyte }, "path"),
        ("a symlink in it that leads out", { k in k + "/pods/escape/volume" }, "symbolic link"),
        ("a symlink in it to a path outside", { k in k + "/pods/escape" }, "symbolic link"),
    ]

    static var nodeRows: [Row] {
        var rows: [Row] = []
        for (label, path, hint) in hostilePaths {
            rows.append(Row("NodeStageVolume at \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.stagingTargetPath = path(f.kubelet) })
            })
            rows.append(Row("NodePublishVolume to \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.targetPath = path(f.kubelet) })
            })
            rows.append(Row("NodeUnpublishVolume of \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodeUnpublishVolume(.with { $0.volumeID = f.volumeID; $0.targetPath = path(f.kubelet) })
            })
            rows.append(Row("NodeExpandVolume at \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.volumePath = path(f.kubelet) })
            })
        }
        for (label, path, hint) in hostilePaths.dropFirst().prefix(5) {
            rows.append(Row("NodePublishVolume from a staging path at \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.stagingTargetPath = path(f.kubelet) })
            })
            rows.append(Row("NodeUnstageVolume of \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodeUnstageVolume(.with { $0.volumeID = f.volumeID; $0.stagingTargetPath = path(f.kubelet) })
            })
            rows.append(Row("NodeGetVolumeStats at \(label)", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumeID = f.volumeID; $0.volumePath = path(f.kubelet) })
            })
        }
        for (label, capability, hint) in unsupportedCapabilities {
            rows.append(Row("NodeStageVolume with \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.volumeCapability = capability })
            })
        }
        for (label, capability, hint) in unsupportedCapabilities.suffix(6) {
            rows.append(Row("NodePublishVolume with \(label)", .invalidArgument, hint: hint) { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.volumeCapability = capability })
            })
        }
        for (label, id) in foreignIDs {
            rows.append(Row("NodeStageVolume of \(label)", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.volumeID = id })
            })
            rows.append(Row("NodeUnpublishVolume of \(label)", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeUnpublishVolume(.with { $0.volumeID = id; $0.targetPath = f.target })
            })
        }
        rows += [
            Row("NodeStageVolume without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.volumeID = "" })
            },
            Row("NodeStageVolume with a 4 KiB volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.volumeID = tooLongID })
            },
            Row("NodeStageVolume without a capability", .invalidArgument, hint: "volume_capability") { d, f in
                _ = try await d.node.nodeStageVolume(stage(f) { $0.clearVolumeCapability() })
            },
            Row("NodeUnstageVolume without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeUnstageVolume(.with { $0.stagingTargetPath = f.staging })
            },
            Row("NodeUnstageVolume of an unknown volume", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeUnstageVolume(.with { $0.volumeID = "vol-0123456789abcdef0"; $0.stagingTargetPath = f.staging })
            },
            Row("NodePublishVolume without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.volumeID = "" })
            },
            Row("NodePublishVolume without a capability", .invalidArgument, hint: "volume_capability") { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.clearVolumeCapability() })
            },
            Row("NodePublishVolume without a staging path", .invalidArgument, hint: "staging_target_path") { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.stagingTargetPath = "" })
            },
            Row("NodePublishVolume of a volume not staged", .failedPrecondition, hint: "NodeStageVolume") { d, f in
                _ = try await d.node.nodePublishVolume(publish(f))
            },
            Row("NodePublishVolume of an unknown volume", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodePublishVolume(publish(f) { $0.volumeID = "vol-0123456789abcdef0" })
            },
            Row("NodeUnpublishVolume without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeUnpublishVolume(.with { $0.targetPath = f.target })
            },
            Row("NodeGetVolumeStats without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumePath = f.target })
            },
            Row("NodeGetVolumeStats without a path", .invalidArgument, hint: "volume_path") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumeID = f.volumeID })
            },
            Row("NodeGetVolumeStats of a 1 MiB path", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumeID = f.volumeID; $0.volumePath = "/" + mebibyte })
            },
            Row("NodeGetVolumeStats of a volume not published", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumeID = f.volumeID; $0.volumePath = f.target })
            },
            Row("NodeGetVolumeStats of an unknown volume", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeGetVolumeStats(.with { $0.volumeID = "vol-0123456789abcdef0"; $0.volumePath = f.target })
            },
            Row("NodeExpandVolume without a volume id", .invalidArgument, hint: "volume_id") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.volumeID = "" })
            },
            Row("NodeExpandVolume with negative required_bytes", .invalidArgument, hint: "required_bytes") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.capacityRange = .with { $0.requiredBytes = -1 } })
            },
            Row("NodeExpandVolume with limit below required", .invalidArgument, hint: "limit_bytes") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.capacityRange = .with { $0.requiredBytes = 2 << 20; $0.limitBytes = 1 << 20 } })
            },
            Row("NodeExpandVolume with no page-aligned size in range", .outOfRange, hint: "limit_bytes") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.capacityRange = .with { $0.requiredBytes = 32 << 20 | 1; $0.limitBytes = 32 << 20 | 100 } })
            },
            Row("NodeExpandVolume with a multi-node capability", .invalidArgument, hint: "access mode") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.volumeCapability = capability(.multiNodeMultiWriter) })
            },
            Row("NodeExpandVolume of a volume not staged", .failedPrecondition, hint: "staged") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f))
            },
            Row("NodeExpandVolume of an unknown volume", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.volumeID = "vol-0123456789abcdef0" })
            },
            // csi-sanity's case: an unknown volume is NOT_FOUND before its path is looked at.
            Row("NodeExpandVolume of an unknown volume at a relative path", .notFound, hint: "volume") { d, f in
                _ = try await d.node.nodeExpandVolume(expand(f) { $0.volumeID = "vol-0123456789abcdef0"; $0.volumePath = "some/path" })
            },
        ]
        return rows
    }

    static func stage(_ f: Fixture, _ change: (inout Csi_V1_NodeStageVolumeRequest) -> Void = { _ in }) -> Csi_V1_NodeStageVolumeRequest {
        var request = Csi_V1_NodeStageVolumeRequest.with {
            $0.volumeID = f.volumeID
            $0.stagingTargetPath = f.staging
            $0.volumeCapability = Requests.mountCapability
            $0.secrets = secrets
        }
        change(&request)
        return request
    }

    static func publish(_ f: Fixture, _ change: (inout Csi_V1_NodePublishVolumeRequest) -> Void = { _ in }) -> Csi_V1_NodePublishVolumeRequest {
        var request = Csi_V1_NodePublishVolumeRequest.with {
            $0.volumeID = f.volumeID
            $0.stagingTargetPath = f.staging
            $0.targetPath = f.target
            $0.volumeCapability = Requests.mountCapability
            $0.secrets = secrets
        }
        change(&request)
        return request
    }

    static func expand(_ f: Fixture, _ change: (inout Csi_V1_NodeExpandVolumeRequest) -> Void = { _ in }) -> Csi_V1_NodeExpandVolumeRequest {
        var request = Csi_V1_NodeExpandVolumeRequest.with {
            $0.volumeID = f.volumeID
            $0.volumePath = f.target
            $0.stagingTargetPath = f.staging
            $0.capacityRange = .with { $0.requiredBytes = 32 << 20 }
            $0.secrets = secrets
        }
        change(&request)
        return request
    }
}
