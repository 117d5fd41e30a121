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
        #expect(try attacher.detach(device: device), "the kernel should free \(device) at once")
        try exporter.remove(name: name)
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
