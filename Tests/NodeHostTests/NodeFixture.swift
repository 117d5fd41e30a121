import Foundation
import Glibc
import KernelFiles
import Testing

@testable import NodeHost

/// A scratch directory with a running exporter, a loop attacher and a mounter. `run` checks
/// afterwards that the test left no mount, FUSE mount or loop device behind, then removes
/// whatever a failed test did leave so later tests start clean.
final class NodeFixture: @unchecked Sendable {
    static let base = "/tmp/strata-nodehost-tests"
    let root: String
    let exporter: FuseExporter
    let attacher = LoopAttacher()
    let mounter = LinuxMounter()
    /// Every exporter this test started (the restart tests start more), stopped at the end.
    private(set) var exporters: [FuseExporter] = []

    init() throws {
        root = "\(Self.base)/\(UUID().uuidString.prefix(8).lowercased())"
        try Syscall.makeDirectories(root)
        exporter = FuseExporter(mountPoint: "\(root)/exports")
        try start(exporter)
    }

    func path(_ relative: String) -> String { "\(root)/\(relative)" }

    func start(_ exporter: FuseExporter) throws {
        try exporter.start()
        exporters.append(exporter)
    }

    /// Exports a new RAM backend and attaches a loop device to it.
    func exportAndAttach(_ name: String, size: UInt64, capacity: UInt64? = nil, directIO: Bool = true, readOnly: Bool = false)
        throws -> (backend: MemoryBackend, file: String, device: String) {
        let backend = MemoryBackend(size: size, capacity: capacity)
        let file = try exporter.add(name: name, backend: backend)
        let device = try attacher.attach(file: file, readOnly: readOnly, directIO: directIO)
        return (backend, file, device)
    }

    /// What a test should have cleaned: unstage in the order the driver does.
    func unstage(name: String, device: String, mounts: [String] = []) throws {
        for target in mounts { try mounter.unmount(target: target) }
        #expect(try detachFreeing(device), "the kernel should free \(device)")
        try exporter.remove(name: name)
    }

    /// Detaches `device` and waits (up to 10 s) until the kernel has freed it from its file.
    /// LOOP_CLR_FD frees a device at once only when the caller is its sole opener, and in a
    /// test process other threads spawn children all the time: a child holds copies of the
    /// parent's descriptors until it execs, so a descriptor of the device this test closed a
    /// moment ago may still be open there, and the kernel frees the device at that last close
    /// instead (measured with a probe: 39 of 300 detaches deferred beside a spawning thread, 0
    /// of 300 without). Returns whether the device was freed.
    func detachFreeing(_ device: String) throws -> Bool {
        guard let number = LoopAttacher.number(of: device) else { return try attacher.detach(device: device) }
        let file = try Syscall.readText(LoopAttacher.backingFilePath(number))
        if try attacher.detach(device: device) { return true }
        return try waitUntilFreed(number: number, from: file)
    }

    /// `LoopAttacher.detach(_:)` (only if the device still serves that file), waiting as
    /// `detachFreeing(_:)` does.
    func detachFreeing(_ attachment: LoopAttachment) throws -> Bool {
        let file = try Syscall.readText(LoopAttacher.backingFilePath(attachment.number))
        if try attacher.detach(attachment) { return true }
        return try waitUntilFreed(number: attachment.number, from: file)
    }

    /// Whether loop device `number` stops serving `file` (its sysfs backing_file text) within
    /// 10 s; another test may bind the number again at once, to another file.
    private func waitUntilFreed(number: Int, from file: String?) throws -> Bool {
        for _ in 0..<1000 {
            let now = try Syscall.readText(LoopAttacher.backingFilePath(number))
            if now == nil || now != file { return true }
            usleep(10_000)
        }
        return false
    }

    /// Mounts under our directory, and loop devices on our files or exporters.
    func leftovers() -> [String] {
        var found: [String] = []
        let mounts = (try? MountTable.read()) ?? []
        let activeExports = Set(exporters.filter(\.isServing).map(\.mountPoint))
        for mount in mounts where mount.mountPoint.hasPrefix(root + "/") && !activeExports.contains(mount.mountPoint) {
            found.append("mount \(mount.mountPoint) (\(mount.fsType))")
        }
        for attachment in ownLoops() {
            found.append("loop \(attachment.device) on \(attachment.backingFile)")
        }
        return found
    }

    /// Loop devices over our files, found by the path they were bound to (which names our unique
    /// directory and survives the export's end), never by an exporter's device number: a stopped
    /// exporter's number goes to the next FUSE mount, another test's.
    func ownLoops() -> [LoopAttachment] {
        ((try? attacher.attachments()) ?? []).filter { attachment in
            attachment.backingFile.hasPrefix(root + "/") || attacher.boundName(number: attachment.number)?.hasPrefix(root + "/") == true
        }
    }

    /// Tears down everything under our directory, by force.
    func forceClean() {
        for attachment in ownLoops() {
            for mount in (try? MountTable.read()) ?? [] where mount.source == attachment.device {
                _ = umount2(mount.mountPoint, Int32(MNT_DETACH))
            }
            _ = try? attacher.detach(attachment)
        }
        let mounts = ((try? MountTable.read()) ?? []).filter { $0.mountPoint.hasPrefix(root + "/") }
        for mount in mounts.reversed() { _ = umount2(mount.mountPoint, Int32(MNT_DETACH)) }
        for exporter in exporters { exporter.stop() }
    }

    /// Runs `body` with a fresh fixture, then stops the exporters and expects nothing left.
    static func run(_ body: (NodeFixture) throws -> Void) throws {
        let fixture = try NodeFixture()
        var failure: (any Error)?
        do { try body(fixture) } catch { failure = error }
        for exporter in fixture.exporters { exporter.stop() }
        let left = fixture.leftovers()
        if failure == nil {
            #expect(left.isEmpty, "the test left behind: \(left)")
        }
        fixture.forceClean()
        let stubborn = fixture.leftovers()
        #expect(stubborn.isEmpty, "could not clean up: \(stubborn)")
        if stubborn.isEmpty { _ = try? FileManager.default.removeItem(atPath: fixture.root) }
        if let failure { throw failure }
    }
}
