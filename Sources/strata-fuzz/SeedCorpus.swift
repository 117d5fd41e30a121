import BlockStore
import CSIProto
import Foundation
import SwiftProtobuf

/// The committed seeds of Tests/FuzzCorpus, written by `strata-fuzz seeds <directory>`: a few
/// valid inputs of every kind, so a short run starts past the formats' outer checks.
enum SeedCorpus {
    static func write(to directory: String) throws {
        for (target, seeds) in [(FuzzTarget.store, store), (.storeOpen, storeOpen), (.requests, try requests())] {
            let folder = directory + "/" + target.rawValue
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, bytes) in seeds {
                try Data(bytes).write(to: URL(fileURLWithPath: folder + "/seed-" + name))
            }
            print("\(folder): \(seeds.count) seeds")
        }
    }

    /// Map flags: magic, version, right layer and cluster size, checksum; plus the run count.
    static let validHeader: UInt8 = 0x0f
    /// Format 2 map entries (little-endian words: state, 0, subcluster mask).
    static let unallocated: [UInt8] = [0, 0, 0, 0]
    static let data: [UInt8] = [1, 0, 0, 0]
    static let zero: [UInt8] = [2, 0, 0, 0]
    static func partial(_ mask: UInt16) -> [UInt8] { [3, 0, UInt8(mask & 0xff), UInt8(mask >> 8)] }

    static func map(runs: [(pages: UInt8, bytes: [UInt8])], dirty: Bool = false, flags: UInt8 = validHeader) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 40)
        header[12] = dirty ? 1 : 0
        var bytes = [flags | UInt8(runs.count) << 4] + header
        for run in runs {
            bytes += [run.pages, 0, UInt8(run.bytes.count)] + run.bytes + [0]
        }
        return bytes
    }

    static var store: [(String, [UInt8])] {
        let name = Array("0000000000000a2f".utf8)
        return [
            ("map-clean", [0] + map(runs: [(0, data + data + unallocated + zero + data)])),
            ("map-partial", [0] + map(runs: [(0, data + partial(0x0005) + zero + partial(0xfffe))])),
            ("map-dirty-sparse", [0] + map(runs: [(0, data + zero), (3, data + unallocated + partial(0x8000))], dirty: true)),
            ("map-bad-entry", [0] + map(runs: [(0, data + [3, 0, 0, 0] + data)])),
            ("map-v1-clean", [0] + map(runs: [(0, [1, 1, 0, 2, 1])], flags: validHeader | 0x40)),
            ("map-v1-bad-entry", [0] + map(runs: [(0, [1, 3, 1])], flags: validHeader | 0x40)),
            ("map-bad-checksum", [0] + map(runs: [], flags: 0x0b)),
            ("layer-name", [1, 0x03, UInt8(name.count)] + name + [0x2f, 0x0a, 0, 0, 0, 0, 0, 0]),
            ("cursor", [2, 5] + Array("12345".utf8) + [7, 0, 0, 0, 0, 0, 0, 0]),
            // layers row: id 1, no parent, depth 1, cluster 65536, not frozen, materialized, 1 ref, 0 bytes, a time.
            ("catalog-layer", [3, 0] + [5, 1, 0, 5, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 5, 0, 5, 1, 5, 1, 5, 0, 2] + [0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
            ("parameters", [4] + Array(#"{"clusterSize":"65536"}"#.utf8)),
        ]
    }

    static var storeOpen: [(String, [UInt8])] {
        (0..<4).map { layer in
            ("layer-\(layer)-dirty", [UInt8(layer)] + map(runs: [(0, data + unallocated + partial(0x3) + zero + unallocated + data)], dirty: true))
        }
    }

    static func requests() throws -> [(String, [UInt8])] {
        let mount = Csi_V1_VolumeCapability.with {
            $0.mount = .with { $0.fsType = "ext4"; $0.mountFlags = ["noatime", "discard"] }
            $0.accessMode.mode = .singleNodeWriter
        }
        let block = Csi_V1_VolumeCapability.with { $0.block = .init(); $0.accessMode.mode = .singleNodeReaderOnly }
        let volumeID = "vol-0b8c2f7e-1d4a-4c5e-9f3b-2a6d8e1c7b90"
        let staging = "/var/lib/kubelet/plugins/kubernetes.io/csi/strata.csi.dev/0123abcd/globalmount"
        let target = "/var/lib/kubelet/pods/4f2a/volumes/kubernetes.io~csi/pvc-1/mount"
        func message(_ kind: UInt8, _ request: some SwiftProtobuf.Message) throws -> [UInt8] {
            [kind] + (try request.serializedBytes() as [UInt8])
        }
        return [
            ("create-volume", try message(0, Csi_V1_CreateVolumeRequest.with {
                $0.name = "pvc-3f1c"
                $0.capacityRange = .with { $0.requiredBytes = 1 << 30; $0.limitBytes = 2 << 30 }
                $0.volumeCapabilities = [mount, block]
                $0.parameters = ["clusterSize": "65536", "csi.storage.k8s.io/pvc/name": "data"]
                $0.secrets = ["token": "s3cr3t"]
                $0.volumeContentSource = .with { $0.snapshot = .with { $0.snapshotID = "snap-1" } }
            })),
            ("controller-expand", try message(1, Csi_V1_ControllerExpandVolumeRequest.with {
                $0.volumeID = volumeID
                $0.capacityRange = .with { $0.requiredBytes = 5000 }
                $0.volumeCapability = mount
            })),
            ("validate-capabilities", try message(2, Csi_V1_ValidateVolumeCapabilitiesRequest.with {
                $0.volumeID = volumeID
                $0.volumeCapabilities = [mount]
            })),
            ("list-volumes", try message(3, Csi_V1_ListVolumesRequest.with { $0.maxEntries = 10; $0.startingToken = "42" })),
            ("create-snapshot", try message(5, Csi_V1_CreateSnapshotRequest.with {
                $0.name = "snapshot-1"; $0.sourceVolumeID = volumeID; $0.parameters = ["csi.storage.k8s.io/x": "y"]
            })),
            ("node-stage", try message(8, Csi_V1_NodeStageVolumeRequest.with {
                $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.volumeCapability = mount
                $0.secrets = ["key": "value"]
            })),
            ("node-publish", try message(9, Csi_V1_NodePublishVolumeRequest.with {
                $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.targetPath = target
                $0.volumeCapability = block; $0.readonly = true
            })),
            ("node-expand", try message(11, Csi_V1_NodeExpandVolumeRequest.with {
                $0.volumeID = volumeID; $0.volumePath = target
                $0.capacityRange = .with { $0.requiredBytes = 3 << 30 }
            })),
            ("path", [13, 0] + Array("/var/lib/kubelet/pods/./4f2a//volumes/x".utf8)),
            ("path-other-root", [13, 1] + Array("/data/K8s/kubelet/pods/4f2a/volumes/x".utf8)),
            ("mount-flags", [14, 7] + Array("noatime".utf8) + [9] + Array("errors=ro".utf8)),
            ("capacity", [15] + [0x88, 0x13, 0, 0, 0, 0, 0, 0, 0] + [0, 0x20, 0, 0, 0, 0, 0, 0, 0] + [0]),
        ]
    }
}
