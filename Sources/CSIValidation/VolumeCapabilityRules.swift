import CSIProto

/// What Strata volumes can be: a block device or an ext4/xfs filesystem used from one node, or
/// a block device used from several nodes at once (ReadWriteMany Block, what KubeVirt needs to
/// live-migrate a VM: its disk is open on the source and the target node during the move).
package enum VolumeCapabilityRules {
    package static let supportedFilesystems: Set<String> = ["ext4", "xfs"]
    package static let defaultFilesystem = "ext4"

    package static let singleNodeAccessModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [
        .singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter,
    ]
    /// Block only: ext4 and xfs are not cluster filesystems, and two kernels mounting one of
    /// them (even one read-only: it replays the journal) corrupt it.
    package static let multiNodeAccessModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [
        .multiNodeMultiWriter, .multiNodeReaderOnly,
    ]
    package static var supportedAccessModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> {
        singleNodeAccessModes.union(multiNodeAccessModes)
    }

    /// Throws INVALID_ARGUMENT naming the first capability Strata cannot provide.
    package static func validate(_ capabilities: [Csi_V1_VolumeCapability]) throws(CSIError) {
        guard !capabilities.isEmpty else { throw .invalidArgument("volume_capabilities is required") }
        for capability in capabilities {
            if let reason = unsupportedReason(capability) { throw .invalidArgument(reason) }
        }
    }

    /// Nil when the capability is supported, else why not (ValidateVolumeCapabilities reports it).
    package static func unsupportedReason(_ capability: Csi_V1_VolumeCapability) -> String? {
        switch capability.accessType {
        case nil:
            return "volume capability needs an access type: block or mount"
        case .block:
            break
        case .mount(let mount):
            if !mount.fsType.isEmpty, !supportedFilesystems.contains(mount.fsType) {
                return "filesystem \(RequestFields.quoted(mount.fsType)) is not supported; use ext4 or xfs"
            }
            if let flag = mount.mountFlags.first(where: { !MountFlagRules.isAllowed($0) }) {
                return "mount flag \(RequestFields.quoted(flag)) is not allowed"
            }
        }
        guard capability.hasAccessMode else { return "volume capability needs an access mode" }
        let mode = capability.accessMode.mode
        guard supportedAccessModes.contains(mode) else {
            return "access mode \(mode) is not supported: Strata volumes are used from one node, or from several as Block (ReadWriteMany Block)"
        }
        if multiNodeAccessModes.contains(mode), !isBlock(capability) {
            return "access mode \(mode) is offered for Block volumes only: two nodes mounting one ext4 or xfs filesystem would corrupt it (use volumeMode: Block)"
        }
        return nil
    }

    /// Whether the capability asks for use from several nodes at once.
    package static func isMultiNode(_ capability: Csi_V1_VolumeCapability) -> Bool {
        multiNodeAccessModes.contains(capability.accessMode.mode)
    }

    package static func isBlock(_ capability: Csi_V1_VolumeCapability) -> Bool {
        if case .block = capability.accessType { return true }
        return false
    }

    package static func isReadOnly(_ capability: Csi_V1_VolumeCapability) -> Bool {
        capability.accessMode.mode == .singleNodeReaderOnly || capability.accessMode.mode == .multiNodeReaderOnly
    }
}

/// Mount flags reach mount(2) as its data string, so only plain option words pass: no commas
/// (which would smuggle more options), no paths, nothing that could change what is mounted.
package enum MountFlagRules {
    /// mount(8) words that change what is mounted, or where, rather than how: Strata makes its
    /// own bind mounts. Refused here, before a volume is exported, attached and formatted for a
    /// mount that could never succeed.
    package static let mountOperations: Set<String> = [
        "bind", "rbind", "move", "remount", "loop",
        "shared", "rshared", "private", "rprivate", "slave", "rslave", "unbindable", "runbindable",
    ]

    package static func isAllowed(_ flag: String) -> Bool {
        guard (1...128).contains(flag.utf8.count) else { return false }
        // Bytes, not Characters: as a Character, U+212A KELVIN SIGN equals "K".
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_=-.".utf8)
        return flag.utf8.allSatisfy(allowed.contains) && !mountOperations.contains(flag.lowercased())
    }
}
