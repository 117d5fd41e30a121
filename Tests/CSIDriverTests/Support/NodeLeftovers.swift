import Foundation
import KernelFiles
import NodeHost
import StrataTestSupport

/// Clearing what drivers under one test directory staged, when a test ends half-way.
enum NodeLeftovers {
    /// Detaches the loop devices over files under `directory`, calls `stopDrivers`, then lazily
    /// unmounts what remains under `directory`, newest first.
    ///
    /// A test that failed half-way leaves its staged volumes' loop devices over exports that die
    /// with their drivers, or every later test of the run has one loop device fewer. They are
    /// cleared while their backing files still show the directory's paths (a stopped driver's
    /// export is unmounted lazily, and then they show "/vol-..."), each only while it still
    /// serves the file it was listed with (the number may already be another test's); one still
    /// in use goes on its last close. A driver killed with volumes staged leaves its mounts
    /// (export, staging, targets), and a failed test would leave them for every later run.
    static func clear(under directory: String, stopDrivers: () -> Void) {
        let loops = LoopAttacher()
        for attachment in (try? loops.attachments()) ?? [] where attachment.backingFile.hasPrefix(directory + "/") {
            _ = try? loops.detach(attachment)
        }
        stopDrivers()
        for mount in ((try? MountTable.read()) ?? []).reversed() where mount.mountPoint.hasPrefix(directory + "/") {
            _ = try? ExternalTool.run("umount", "-l", mount.mountPoint)
        }
    }
}
