import BlockStore
import CSIValidation
import CSIProto
import GRPCCore

/// Runs one of the driver's request checks and compares its verdict with the rule it documents,
/// restated here over bytes (not over Swift Characters, whose canonical equivalence can make
/// different bytes compare equal). Each `check…` returns whether the driver accepted.
enum ValidationOracle {
    /// `--kubelet-dir` values: the default, and one given with a trailing slash and capitals.
    static let roots = ["/var/lib/kubelet", "/data/K8s/kubelet/"]
    static let pathRules = roots.map { PathRules(root: $0) }

    // MARK: Running a check

    /// Runs `body`; a refusal must be a CSIError with one of `codes` and a bounded message.
    static func accepts(_ what: String, codes: Set<RPCError.Code> = [.invalidArgument], _ body: () throws(CSIError) -> Void) -> Bool {
        do {
            try body()
            return true
        } catch {
            check(codes.contains(error.rpcErrorCode), "\(what) refused with \(error.rpcErrorCode), expected one of \(codes)")
            check(error.rpcErrorMessage.utf8.count <= CSIError.maximumMessageBytes,
                  "\(what): a \(error.rpcErrorMessage.utf8.count)-byte error message")
            return false
        }
    }

    // MARK: Plain fields

    /// Names: 1–1024 bytes, no C0 control character or DEL.
    static func checkName(_ name: String) -> Bool {
        let expected = !name.isEmpty && name.utf8.count <= RequestFields.maximumNameBytes
            && !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
        let accepted = accepts("name") { () throws(CSIError) in try RequestFields.requireName(name) }
        check(accepted == expected, "name \(name.debugDescription): accepted \(accepted), rule says \(expected)")
        checkQuoted(name, limit: 64)
        return accepted
    }

    /// Ids: 1–128 bytes (what they name is the store's business).
    static func checkID(_ id: String) -> Bool {
        let expected = !id.isEmpty && id.utf8.count <= RequestFields.maximumIDBytes
        let accepted = accepts("id") { () throws(CSIError) in try RequestFields.requireID(id, field: "volume_id") }
        check(accepted == expected, "id \(id.debugDescription): accepted \(accepted), rule says \(expected)")
        return accepted
    }

    static func checkNonNegative(_ value: Int32) -> Bool {
        let accepted = accepts("max_entries") { () throws(CSIError) in try RequestFields.requireNonNegative(value, field: "max_entries") }
        check(accepted == (value >= 0), "max_entries \(value): accepted \(accepted)")
        return accepted
    }

    /// A listing token is one of the store's cursors; a malformed one is the store's
    /// `.invalidArgument` (which the services answer with ABORTED).
    static func checkStartingToken(_ token: String) {
        do {
            _ = try BlockStore.parseCursor(token.isEmpty ? nil : token)
        } catch {
            check((error as? StoreError)?.code == .invalidArgument, "token \(token.debugDescription) gave \(error)")
        }
    }

    /// Error messages quote what they echo: the whole value when short, else a prefix and a size.
    static func checkQuoted(_ value: String, limit: Int) {
        let quoted = RequestFields.quoted(value, limit: limit)
        if value.unicodeScalars.count <= limit {
            check(quoted == "\"\(value)\"", "quoted(\(value.debugDescription)) = \(quoted.debugDescription)")
        } else {
            check(quoted.unicodeScalars.count <= limit + 40, "quoted a \(value.utf8.count)-byte value as \(quoted.unicodeScalars.count) scalars")
        }
    }

    // MARK: Paths

    /// A path is accepted exactly when it is absolute, at most 4096 bytes without NUL, has no
    /// `..` component, and its lexical normal form lies strictly inside the root; the result is
    /// that normal form (no empty, `.` or `..` component), and checking it again changes nothing.
    @discardableResult
    static func checkPath(_ path: String, root index: Int = 0) -> String? {
        let root = Array(pathRules[index].root.utf8)
        check(root.first == UInt8(ascii: "/") && root.last != UInt8(ascii: "/") || root == [UInt8(ascii: "/")],
              "root \(roots[index]) normalized to \(pathRules[index].root)")
        let bytes = Array(path.utf8)
        let components = bytes.split(separator: UInt8(ascii: "/"))
        let normal = components.filter { !$0.elementsEqual([UInt8(ascii: ".")]) }
        let normalPath = normal.isEmpty ? [UInt8(ascii: "/")] : normal.flatMap { [UInt8(ascii: "/")] + $0 }
        let expected = bytes.first == UInt8(ascii: "/") && bytes.count <= 4096 && !bytes.contains(0)
            && !components.contains { $0.elementsEqual("..".utf8) }
            && normalPath.count > root.count + 1 && normalPath.starts(with: root + [UInt8(ascii: "/")])
        var result: String?
        let accepted = accepts("path") { () throws(CSIError) in result = try pathRules[index].require(path, field: "target_path") }
        check(accepted == expected, "path \(path.debugDescription) under \(roots[index]): accepted \(accepted) as \(result.debugDescription), rule says \(expected)")
        guard let result else { return nil }
        check(Array(result.utf8) == normalPath, "path \(path.debugDescription) became \(result.debugDescription), its normal form is \(String(decoding: normalPath, as: UTF8.self).debugDescription)")
        let again = try? pathRules[index].require(result, field: "target_path")
        check(again == result, "the accepted path \(result.debugDescription) checks as \(again.debugDescription)")
        return result
    }

    // MARK: Capabilities

    static let supportedModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [
        .singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter,
    ]
    /// Several nodes at once, and only as a block device.
    static let blockOnlyModes: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [.multiNodeMultiWriter, .multiNodeReaderOnly]
    static let mountOperations: Set<String> = [
        "bind", "rbind", "move", "remount", "loop",
        "shared", "rshared", "private", "rprivate", "slave", "rslave", "unbindable", "runbindable",
    ]

    /// A mount flag reaches mount(2)'s data string: 1–128 bytes of [A-Za-z0-9_=.-], and no word
    /// that is a mount operation rather than an option.
    static func flagIsAllowed(_ flag: String) -> Bool {
        let bytes = Array(flag.utf8)
        let plain = (1...128).contains(bytes.count) && bytes.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
        }
        return plain && !mountOperations.contains(String(decoding: bytes.map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 32 : $0 }, as: UTF8.self))
    }

    static func checkMountFlag(_ flag: String) {
        let accepted = MountFlagRules.isAllowed(flag)
        check(accepted == flagIsAllowed(flag), "mount flag \(flag.debugDescription) (\(Array(flag.utf8))): allowed \(accepted), rule says \(!accepted)")
    }

    /// Block with a single-node or a multi-node access mode, or mount with ext4/xfs (or unset),
    /// allowed flags and a single-node access mode.
    static func isSupported(_ capability: Csi_V1_VolumeCapability) -> Bool {
        guard capability.hasAccessMode else { return false }
        let mode = capability.accessMode.mode
        switch capability.accessType {
        case nil:
            return false
        case .block:
            return supportedModes.contains(mode) || blockOnlyModes.contains(mode)
        case .mount(let mount):
            guard ["", "ext4", "xfs"].contains(where: { $0.utf8.elementsEqual(mount.fsType.utf8) }),
                  mount.mountFlags.allSatisfy(flagIsAllowed) else { return false }
            return supportedModes.contains(mode)
        }
    }

    static func checkCapability(_ capability: Csi_V1_VolumeCapability) {
        let reason = VolumeCapabilityRules.unsupportedReason(capability)
        check((reason == nil) == isSupported(capability), "capability \(capability): reason \(reason.debugDescription), rule says supported=\(isSupported(capability))")
        if let reason { check(reason.utf8.count <= CSIError.maximumMessageBytes, "a \(reason.utf8.count)-byte reason") }
    }

    static func checkCapabilities(_ capabilities: [Csi_V1_VolumeCapability]) -> Bool {
        capabilities.forEach(checkCapability)
        let accepted = accepts("volume_capabilities") { () throws(CSIError) in try VolumeCapabilityRules.validate(capabilities) }
        check(accepted == (!capabilities.isEmpty && capabilities.allSatisfy(isSupported)), "capabilities \(capabilities): accepted \(accepted)")
        return accepted
    }

    // MARK: Parameters

    static let reservedPrefix = Array("csi.storage.k8s.io/".utf8)

    /// Keys under csi.storage.k8s.io/ are ignored; `clusterSize` must be a power of two in
    /// 4096…1048576; any other key is refused. What is accepted survives the catalog round trip.
    static func checkStorageClass(_ parameters: [String: String]) -> Bool {
        var result: StorageClassParameters?
        let accepted = accepts("parameters") { () throws(CSIError) in result = try StorageClassParameters(parameters) }
        let expected = parameters.allSatisfy { key, value in
            if key.utf8.starts(with: reservedPrefix) { return true }
            guard key.utf8.elementsEqual("clusterSize".utf8), let size = UInt32(value) else { return false }
            return size >= 4096 && size <= 1 << 20 && size.nonzeroBitCount == 1
        }
        let ascii = parameters.allSatisfy { $0.key.utf8.allSatisfy { $0 < 0x80 } }
        // Non-ASCII keys may be refused more often than the byte rule says, never less.
        check(accepted ? expected : !(expected && ascii), "parameters \(parameters): accepted \(accepted), rule says \(expected)")
        guard let result else { return false }
        check(result.clusterSize == parameters["clusterSize"].flatMap { UInt32($0) }, "clusterSize \(parameters["clusterSize"] ?? "") read as \(result.clusterSize.map(String.init) ?? "nil")")
        check((try? StorageClassParameters(result.stored)) == result, "stored parameters \(result.stored) do not read back")
        return true
    }

    static func checkSnapshotParameters(_ parameters: [String: String]) {
        let accepted = accepts("parameters") { () throws(CSIError) in try SnapshotParameters.validate(parameters) }
        let expected = parameters.allSatisfy { key, value in
            key.utf8.starts(with: reservedPrefix) || (key == "replicate" && (value == "all-nodes" || value == "none"))
        }
        let ascii = parameters.keys.allSatisfy { $0.utf8.allSatisfy { $0 < 0x80 } }
        check(accepted ? expected : !(expected && ascii), "snapshot parameters \(parameters): accepted \(accepted), rule says \(expected)")
    }

    // MARK: Capacity

    /// A new volume's size is page-aligned, at least the required bytes and the source's size,
    /// positive, and within the limit; it is refused (OUT_OF_RANGE) only when no such size
    /// exists. Expansion never shrinks, and likewise. Negative or inverted ranges are INVALID_ARGUMENT.
    static func checkCapacity(_ range: Csi_V1_CapacityRange?, sourceSize: UInt64?, current: UInt64?) -> Bool {
        var parsed: CapacityRequest?
        guard accepts("capacity_range", { () throws(CSIError) in parsed = try CapacityRequest(range) }) else {
            let required = range?.requiredBytes ?? 0, limit = range?.limitBytes ?? 0
            check(required < 0 || limit < 0 || (limit > 0 && required > limit), "refused the range \(String(describing: range))")
            return false
        }
        let capacity = parsed!
        check(capacity.requiredBytes == UInt64(range?.requiredBytes ?? 0) && capacity.limitBytes == UInt64(range?.limitBytes ?? 0),
              "range \(String(describing: range)) read as \(capacity.requiredBytes)…\(capacity.limitBytes)")
        let granularity = CapacityRequest.granularity
        let limit = capacity.limitBytes
        func fits(_ size: UInt64) -> Bool { limit == 0 || size <= limit }

        // A new volume.
        let smallest = roundedUp(max(capacity.requiredBytes, sourceSize ?? 0, 1))
        var size: UInt64?
        let created = accepts("new volume size", codes: [.outOfRange]) { () throws(CSIError) in size = try capacity.sizeForNewVolume(sourceSize: sourceSize) }
        check(created == fits(smallest), "range \(capacity.requiredBytes)…\(limit), source \(sourceSize.map(String.init) ?? "none"): created \(created) (\(size.map(String.init) ?? "-")), yet the smallest aligned size is \(smallest)")
        if let size {
            check(size % granularity == 0 && size >= smallest && fits(size),
                  "range \(capacity.requiredBytes)…\(limit), source \(sourceSize.map(String.init) ?? "none"): size \(size)")
        }
        // The up-front check of NodeExpandVolume agrees with what a size needs.
        let inRange = accepts("aligned size in range", codes: [.outOfRange]) { () throws(CSIError) in try capacity.requireAlignedSizeInRange() }
        check(inRange == fits(roundedUp(capacity.requiredBytes)), "range \(capacity.requiredBytes)…\(limit): in range \(inRange)")

        // An existing volume of `current` bytes (aligned, as the store keeps them).
        if let current {
            let target = max(roundedUp(capacity.requiredBytes), current)
            var expanded: UInt64?
            let grown = accepts("expanded size", codes: [.outOfRange]) { () throws(CSIError) in expanded = try capacity.sizeAfterExpanding(from: current) }
            check(grown == fits(target), "range \(capacity.requiredBytes)…\(limit) from \(current): expanded \(grown)")
            if let expanded {
                check(expanded == target, "range \(capacity.requiredBytes)…\(limit) from \(current): expanded to \(expanded), not \(target)")
            }
        }
        return created
    }

    static func roundedUp(_ bytes: UInt64) -> UInt64 {
        let granularity = CapacityRequest.granularity
        return bytes % granularity == 0 ? bytes : (bytes / granularity + 1) * granularity
    }
}
