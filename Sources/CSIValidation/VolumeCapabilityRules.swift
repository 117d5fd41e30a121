import CSIProto

/// What Strata volumes can be: a block device or an ext4/xfs filesystem, used from one node.
package enum VolumeCapabilityRules {
    package static let supportedFilesystems: Set<String> = ["ext4", "xfs"]
    package static let defaultFilesystem = "ext4"

    package static let supportedAccessModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [
        .singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter,
    ]

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
        guard supportedAccessModes.contains(capability.accessMode.mode) else {
            return "access mode \(capability.accessMode.mode) is not supported: Strata volumes are used from a single node"
        }
        return nil
    }

    package static func isBlock(_ capability: Csi_V1_VolumeCapability) -> Bool {
        if case .block = capability.accessType { return true }
        return false
    }

    package static func isReadOnly(_ capability: Csi_V1_VolumeCapability) -> Bool {
        capability.accessMode.mode == .singleNodeReaderOnly
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
