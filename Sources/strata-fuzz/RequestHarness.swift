import CSIValidation
import CSIProto
import Foundation

/// The `requests` target: the first byte picks a CSI request type, the rest is its protobuf
/// encoding (or, for the last kinds, a raw path, mount flags or capacity numbers). Each decoded
/// request goes through the checks its service makes before acting, in the same order, and
/// `ValidationOracle` states independently what each check must accept.
///
/// Every refusal must be a CSIError with the expected code and a message of at most 1 KiB.
enum RequestHarness {
    static func run(_ input: inout FuzzInput) {
        let kind = input.byte() % 17
        switch kind {
        case 13:
            let root = Int(input.byte()) % ValidationOracle.roots.count
            ValidationOracle.checkPath(String(decoding: input.rest(), as: UTF8.self), root: root)
        case 14: checkMountFlags(&input)
        case 15: checkCapacity(&input)
        case 16: ValidationOracle.checkQuoted(String(decoding: input.rest(), as: UTF8.self), limit: 64)
        default: checkMessage(kind, Data(input.rest()))
        }
    }

    private static func checkMessage(_ kind: UInt8, _ bytes: Data) {
        let oracle = ValidationOracle.self
        switch kind {
        case 0:
            guard let request = try? Csi_V1_CreateVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkName(request.name), oracle.checkCapabilities(request.volumeCapabilities),
                  oracle.checkStorageClass(request.parameters) else { return }
            let sourceSize: UInt64? = request.hasVolumeContentSource ? 1 << 30 : nil
            guard oracle.checkCapacity(request.hasCapacityRange ? request.capacityRange : nil, sourceSize: sourceSize, current: nil) else { return }
            switch request.volumeContentSource.type {
            case .snapshot(let snapshot): _ = oracle.checkID(snapshot.snapshotID)
            case .volume(let volume): _ = oracle.checkID(volume.volumeID)
            case nil: break
            }
        case 1:
            guard let request = try? Csi_V1_ControllerExpandVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), request.hasCapacityRange else { return }
            let current = CapacityRequest.roundedUp(UInt64(request.volumeID.utf8.count) << 20)
            guard oracle.checkCapacity(request.capacityRange, sourceSize: nil, current: current) else { return }
            if request.hasVolumeCapability { oracle.checkCapability(request.volumeCapability) }
        case 2:
            guard let request = try? Csi_V1_ValidateVolumeCapabilitiesRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID) else { return }
            for capability in request.volumeCapabilities { oracle.checkCapability(capability) }
            _ = oracle.checkStorageClass(request.parameters)
        case 3:
            guard let request = try? Csi_V1_ListVolumesRequest(serializedBytes: bytes) else { return }
            guard oracle.checkNonNegative(request.maxEntries) else { return }
            oracle.checkStartingToken(request.startingToken)
        case 4:
            guard let request = try? Csi_V1_ListSnapshotsRequest(serializedBytes: bytes) else { return }
            guard oracle.checkNonNegative(request.maxEntries) else { return }
            oracle.checkStartingToken(request.startingToken)
        case 5:
            guard let request = try? Csi_V1_CreateSnapshotRequest(serializedBytes: bytes) else { return }
            guard oracle.checkName(request.name), oracle.checkID(request.sourceVolumeID) else { return }
            oracle.checkSnapshotParameters(request.parameters)
        case 6:
            guard let request = try? Csi_V1_CreateVolumeGroupSnapshotRequest(serializedBytes: bytes) else { return }
            guard oracle.checkName(request.name) else { return }
            for id in request.sourceVolumeIds where !oracle.checkID(id) { return }
            oracle.checkSnapshotParameters(request.parameters)
        case 7:
            guard let request = try? Csi_V1_ControllerPublishVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), !request.nodeID.isEmpty, request.hasVolumeCapability else { return }
            _ = oracle.checkCapabilities([request.volumeCapability])
        case 8:
            guard let request = try? Csi_V1_NodeStageVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), oracle.checkPath(request.stagingTargetPath) != nil,
                  request.hasVolumeCapability else { return }
            _ = oracle.checkCapabilities([request.volumeCapability])
        case 9:
            guard let request = try? Csi_V1_NodePublishVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), oracle.checkPath(request.targetPath) != nil,
                  request.hasVolumeCapability, oracle.checkCapabilities([request.volumeCapability]) else { return }
            _ = oracle.checkPath(request.stagingTargetPath)
        case 10:
            guard let request = try? Csi_V1_NodeUnpublishVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID) else { return }
            _ = oracle.checkPath(request.targetPath)
        case 11:
            guard let request = try? Csi_V1_NodeExpandVolumeRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), oracle.checkPath(request.volumePath) != nil else { return }
            if !request.stagingTargetPath.isEmpty, oracle.checkPath(request.stagingTargetPath) == nil { return }
            guard oracle.checkCapacity(request.hasCapacityRange ? request.capacityRange : nil, sourceSize: nil, current: 4096) else { return }
            if request.hasVolumeCapability { oracle.checkCapability(request.volumeCapability) }
        default:
            guard let request = try? Csi_V1_NodeGetVolumeStatsRequest(serializedBytes: bytes) else { return }
            guard oracle.checkID(request.volumeID), !request.volumePath.isEmpty else { return }
            _ = oracle.checkPath(request.volumePath)
        }
    }

    /// Mount flags straight from bytes: comma- or NUL-free words are hard to reach through protobuf.
    private static func checkMountFlags(_ input: inout FuzzInput) {
        var flags: [String] = []
        while !input.isExhausted && flags.count < 8 { flags.append(input.string(limit: 160)) }
        for flag in flags { ValidationOracle.checkMountFlag(flag) }
        var capability = Csi_V1_VolumeCapability()
        capability.mount.mountFlags = flags
        capability.accessMode.mode = .singleNodeWriter
        ValidationOracle.checkCapability(capability)
    }

    /// Capacity ranges with any source size and current size, not only those a request carries.
    private static func checkCapacity(_ input: inout FuzzInput) {
        var range = Csi_V1_CapacityRange()
        range.requiredBytes = Int64(bitPattern: input.integer(UInt64.self) >> UInt64(input.byte() % 64))
        range.limitBytes = Int64(bitPattern: input.integer(UInt64.self) >> UInt64(input.byte() % 64))
        // Sources are store volumes: positive and page-aligned.
        let sourceSize = input.bool() ? max(CapacityRequest.roundedUp(input.integer(UInt64.self) >> 2), CapacityRequest.granularity) : nil
        let current = CapacityRequest.roundedUp(input.integer(UInt64.self) >> UInt64(2 + input.byte() % 62))
        _ = ValidationOracle.checkCapacity(input.bool() ? nil : range, sourceSize: sourceSize, current: current)
    }
}
