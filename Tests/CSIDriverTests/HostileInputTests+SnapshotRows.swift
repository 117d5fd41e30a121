import CSIProto
import GRPCCore
import Testing

/// Hostile requests about snapshots and group snapshots.
extension HostileInputTests {
    static func snapshot(_ name: String, of volumeID: String, _ change: (inout Csi_V1_CreateSnapshotRequest) -> Void = { _ in }) -> Csi_V1_CreateSnapshotRequest {
        var request = Requests.createSnapshot(name, of: volumeID)
        request.secrets = secrets
        change(&request)
        return request
    }

    static func group(_ name: String, of volumeIDs: [String], _ change: (inout Csi_V1_CreateVolumeGroupSnapshotRequest) -> Void = { _ in }) -> Csi_V1_CreateVolumeGroupSnapshotRequest {
        var request = Csi_V1_CreateVolumeGroupSnapshotRequest.with {
            $0.name = name
            $0.sourceVolumeIds = volumeIDs
            $0.secrets = secrets
        }
        change(&request)
        return request
    }

    static var snapshotRows: [Row] {
        var rows: [Row] = [
            Row("CreateSnapshot with an empty name", .invalidArgument, hint: "name") { d, f in
                _ = try await d.controller.createSnapshot(snapshot("", of: f.volumeID))
            },
            Row("CreateSnapshot with a 1 MiB name", .invalidArgument, hint: "name") { d, f in
                _ = try await d.controller.createSnapshot(snapshot(mebibyte, of: f.volumeID))
            },
            Row("CreateSnapshot without a source", .invalidArgument, hint: "source_volume_id") { d, _ in
                _ = try await d.controller.createSnapshot(snapshot("s", of: ""))
            },
            Row("CreateSnapshot of a 4 KiB source id", .invalidArgument, hint: "source_volume_id") { d, _ in
                _ = try await d.controller.createSnapshot(snapshot("s", of: tooLongID))
            },
            Row("CreateSnapshot with a parameter", .invalidArgument, hint: "parameter") { d, f in
                _ = try await d.controller.createSnapshot(snapshot("s", of: f.volumeID) { $0.parameters = ["consistency": "none"] })
            },
            Row("CreateSnapshot taking a group member's name", .invalidArgument, hint: "\"/\"") { d, f in
                _ = try await d.controller.createSnapshot(snapshot("fixture-group/" + f.volumeID, of: f.volumeID))
            },
            Row("DeleteSnapshot without an id", .invalidArgument, hint: "snapshot_id") { d, _ in
                _ = try await d.controller.deleteSnapshot(.with { $0.secrets = secrets })
            },
            Row("DeleteSnapshot with a 4 KiB id", .invalidArgument, hint: "snapshot_id") { d, _ in
                _ = try await d.controller.deleteSnapshot(.with { $0.snapshotID = tooLongID; $0.secrets = secrets })
            },
            Row("DeleteSnapshot of a group member", .failedPrecondition, hint: "group") { d, f in
                _ = try await d.controller.deleteSnapshot(.with { $0.snapshotID = f.groupMemberID; $0.secrets = secrets })
            },
            Row("DeleteSnapshot of a volume id", nil) { d, f in
                _ = try await d.controller.deleteSnapshot(.with { $0.snapshotID = f.volumeID; $0.secrets = secrets })
            },
            Row("GetSnapshot with a 4 KiB id", .invalidArgument, hint: "snapshot_id") { d, _ in
                _ = try await d.controller.getSnapshot(.with { $0.snapshotID = tooLongID; $0.secrets = secrets })
            },
            Row("ListSnapshots with a garbage token", .aborted, hint: "starting_token") { d, _ in
                _ = try await d.controller.listSnapshots(.with { $0.startingToken = "garbage"; $0.secrets = secrets })
            },
            Row("ListSnapshots with a 1 MiB token", .aborted, hint: "starting_token") { d, _ in
                _ = try await d.controller.listSnapshots(.with { $0.startingToken = mebibyte; $0.secrets = secrets })
            },
            Row("ListSnapshots with a negative max_entries", .invalidArgument, hint: "max_entries") { d, _ in
                _ = try await d.controller.listSnapshots(.with { $0.maxEntries = -1; $0.secrets = secrets })
            },
            Row("ListSnapshots filtered by a 1 MiB snapshot id finds nothing", nil) { d, _ in
                let page = try await d.controller.listSnapshots(.with { $0.snapshotID = mebibyte; $0.secrets = secrets })
                #expect(page.entries.isEmpty)
            },
        ]
        for (label, id) in foreignIDs {
            rows.append(Row("CreateSnapshot of \(label)", .notFound, hint: "volume") { d, _ in
                _ = try await d.controller.createSnapshot(snapshot("s", of: id))
            })
            rows.append(Row("DeleteSnapshot of \(label)", nil) { d, _ in
                _ = try await d.controller.deleteSnapshot(.with { $0.snapshotID = id; $0.secrets = secrets })
            })
            rows.append(Row("GetSnapshot of \(label)", .notFound, hint: "snapshot") { d, _ in
                _ = try await d.controller.getSnapshot(.with { $0.snapshotID = id; $0.secrets = secrets })
            })
            rows.append(Row("CreateVolume from a snapshot: \(label)", .notFound, hint: "snapshot") { d, _ in
                _ = try await d.controller.createVolume(create { $0.volumeContentSource = .with { $0.snapshot = .with { $0.snapshotID = id } } })
            })
        }
        return rows
    }

    static var groupRows: [Row] {
        var rows: [Row] = [
            Row("CreateVolumeGroupSnapshot with an empty name", .invalidArgument, hint: "name") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("", of: [f.volumeID]))
            },
            Row("CreateVolumeGroupSnapshot with a 1 MiB name", .invalidArgument, hint: "name") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group(mebibyte, of: [f.volumeID]))
            },
            Row("CreateVolumeGroupSnapshot with a / in its name", .invalidArgument, hint: "\"/\"") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("fixture-group/sub", of: [f.volumeID]))
            },
            Row("CreateVolumeGroupSnapshot with a name leaving no room for member names", .invalidArgument, hint: "name") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group(String(repeating: "g", count: 1000), of: [f.volumeID]))
            },
            Row("CreateVolumeGroupSnapshot without volumes", .invalidArgument, hint: "source_volume_ids") { d, _ in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("g", of: []))
            },
            Row("CreateVolumeGroupSnapshot listing a volume twice", .invalidArgument, hint: "twice") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("g", of: [f.volumeID, f.volumeID]))
            },
            Row("CreateVolumeGroupSnapshot with an empty volume id", .invalidArgument, hint: "source_volume_ids") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("g", of: [f.volumeID, ""]))
            },
            Row("CreateVolumeGroupSnapshot with a parameter", .invalidArgument, hint: "parameter") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("g", of: [f.volumeID]) { $0.parameters = ["x": "y"] })
            },
            Row("CreateVolumeGroupSnapshot reusing a name for other volumes", .alreadyExists, hint: "fixture-group") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("fixture-group", of: [f.volumeID, "vol-0123456789abcdef0"]))
            },
            Row("GetVolumeGroupSnapshot without an id", .invalidArgument, hint: "group_snapshot_id") { d, _ in
                _ = try await d.groupController.getVolumeGroupSnapshot(.with { $0.secrets = secrets })
            },
            Row("GetVolumeGroupSnapshot naming other members", .invalidArgument, hint: "snapshot_ids") { d, f in
                _ = try await d.groupController.getVolumeGroupSnapshot(.with {
                    $0.groupSnapshotID = f.groupSnapshotID; $0.snapshotIds = [f.snapshotID]; $0.secrets = secrets
                })
            },
            Row("DeleteVolumeGroupSnapshot without an id", .invalidArgument, hint: "group_snapshot_id") { d, _ in
                _ = try await d.groupController.deleteVolumeGroupSnapshot(.with { $0.secrets = secrets })
            },
            Row("DeleteVolumeGroupSnapshot naming other members", .invalidArgument, hint: "snapshot_ids") { d, f in
                _ = try await d.groupController.deleteVolumeGroupSnapshot(.with {
                    $0.groupSnapshotID = f.groupSnapshotID; $0.snapshotIds = [f.snapshotID]; $0.secrets = secrets
                })
            },
            Row("DeleteVolumeGroupSnapshot with a 4 KiB id", .invalidArgument, hint: "group_snapshot_id") { d, _ in
                _ = try await d.groupController.deleteVolumeGroupSnapshot(.with { $0.groupSnapshotID = tooLongID; $0.secrets = secrets })
            },
        ]
        for (label, id) in foreignIDs {
            rows.append(Row("CreateVolumeGroupSnapshot of \(label)", .notFound, hint: "volume") { d, f in
                _ = try await d.groupController.createVolumeGroupSnapshot(group("g", of: [f.volumeID, id]))
            })
            rows.append(Row("GetVolumeGroupSnapshot of \(label)", .notFound, hint: "group snapshot") { d, _ in
                _ = try await d.groupController.getVolumeGroupSnapshot(.with { $0.groupSnapshotID = id; $0.secrets = secrets })
            })
            rows.append(Row("DeleteVolumeGroupSnapshot of \(label)", nil) { d, _ in
                _ = try await d.groupController.deleteVolumeGroupSnapshot(.with { $0.groupSnapshotID = id; $0.secrets = secrets })
            })
        }
        return rows
    }
}
