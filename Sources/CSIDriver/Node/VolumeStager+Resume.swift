import CSIValidation
import Foundation
import FuseKeeperProtocol
import NodeHost

/// Starting the node side: resuming the FUSE connection the keeper kept alive, or mounting anew.
extension VolumeStager {
    /// Runs before the node reports ready. With a keeper holding descriptors that prove to be
    /// this node's (volume, inode and cookie as the registry recorded them), the connection is
    /// resumed: loop devices, filesystems and pods on it never noticed, and only what is missing
    /// (a loop device or mount the previous process had not made yet) is made. A descriptor that
    /// does not match is never served and its volume is reported abnormal. Otherwise the export
    /// is mounted afresh and every staged volume brought back as after a crash (`recover()`).
    func startServing() throws {
        guard let keeper, let resumableExporter = resumable else {
            try exporter.start()
            recover()
            return
        }
        if let release = Self.kernelRelease, release < (6, 9) {
            logger.warning("this kernel has no FUSE_NOTIFY_RESEND (Linux 6.9): after a restart, requests the previous process had read stay blocked", metadata: [
                "kernel": "\(release.0).\(release.1)",
            ])
        }
        var held: [(entry: KeeperEntry, descriptor: Int32)] = []
        do {
            held = try keeper.list()
        } catch {
            logger.error("cannot reach the FUSE keeper: staged volumes cannot be resumed", metadata: ["error": "\(error)"])
        }
        defer { held.forEach { close($0.descriptor) } }
        var proven: [(entry: KeeperEntry, descriptor: Int32)] = []
        for item in held {
            let entry = item.entry
            guard let record = registry[entry.volumeID] else {
                // Unstaged while the keeper was unreachable: nobody needs it any more.
                try? keeper.drop(volumeID: entry.volumeID)
                continue
            }
            guard record.export?.inode == entry.inode, let cookie = record.cookie, cookie == entry.cookie else {
                let reason = "the FUSE descriptor the keeper holds for this volume does not match the node registry (inode \(entry.inode), registry \(record.export.map { String($0.inode) } ?? "none")); it is not served"
                logger.critical("refusing a FUSE descriptor", metadata: ["volumeId": "\(entry.volumeID)", "reason": "\(reason)"])
                unhealthy.withLock { $0[entry.volumeID] = .refused(reason) }
                continue
            }
            proven.append(item)
        }
        guard let connection = proven.first, resumableExporter.hasMountToResume else {
            // Whatever the keeper held belongs to a connection nobody will resume (start() aborts it).
            for item in held { try? keeper.drop(volumeID: item.entry.volumeID) }
            try exporter.start()
            recover()
            return
        }
        let resumable = Set(proven.map(\.entry.volumeID))
        for record in registry.all where !resumable.contains(record.volumeID) && unhealthy.withLock({ $0[record.volumeID] }) == nil {
            unhealthy.withLock {
                $0[record.volumeID] = .refused("the FUSE keeper holds no descriptor for this volume, so its export cannot be proven; unstage and stage it again")
            }
        }
        for item in proven { _ = try exportedFile(for: item.entry.volumeID, handingToKeeper: false) }
        let descriptor = dup(connection.descriptor)
        guard descriptor >= 0 else { throw CSIError.internalError("dup of the FUSE descriptor failed: errno \(errno)") }
        try resumableExporter.resume(descriptor: descriptor, parameters: FuseInitParameters(
            protocolMinor: connection.entry.protocolMinor, maxReadahead: connection.entry.maxReadahead))
        for item in proven {
            guard let record = registry[item.entry.volumeID] else { continue }
            do {
                try bringUp(record)
                for (target, readOnly) in record.targets.sorted(by: { $0.key < $1.key }) where !(try mounter.isMountPoint(target)) {
                    try bind(record, to: target, readOnly: readOnly)
                }
            } catch {
                logger.error("could not complete a resumed volume", metadata: ["volumeId": "\(record.volumeID)", "error": "\(error)"])
            }
        }
    }

    /// The running kernel's major and minor version (from uname).
    static var kernelRelease: (Int, Int)? {
        var names = utsname()
        guard uname(&names) == 0 else { return nil }
        let release = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }
}
