#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import StrataTestSupport

/// The kernel and initramfs a QEMU test guest boots: built (once, then cached in .build-guest/)
/// by scripts/guest/build-guest.sh from Debian's cloud kernel, busybox-static and the disk
/// workload. A test skips, printing `unavailableReason`, where the host cannot run guests, and
/// asks `prepared()` for the image otherwise.
struct GuestImage: Sendable {
    let kernel: String
    let initramfs: String
    let qemu: String

    /// Why guests cannot run here (not root, no QEMU), or nil. A guest image that cannot be
    /// built where QEMU is installed is a failure, not a reason to skip: `prepared()` throws.
    static var unavailableReason: String? {
        guard geteuid() == 0 else { return "QEMU guests on loop devices need root" }
        guard (try? ExternalTool.locate("qemu-system-x86_64")) != nil else {
            return "qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)"
        }
        return nil
    }

    /// Runs build-guest.sh (quick when nothing changed) and returns the image's paths.
    static func prepared() throws -> GuestImage {
        let cache = ProcessInfo.processInfo.environment["STRATA_GUEST_DIR"] ?? Repository.path(".build-guest")
        try ExternalTool.run("/bin/bash", [Repository.path("scripts/guest/build-guest.sh")])
        let image = GuestImage(kernel: cache + "/vmlinuz", initramfs: cache + "/initramfs.cpio.gz",
                               qemu: try ExternalTool.locate("qemu-system-x86_64"))
        for file in [image.kernel, image.initramfs] where !FileManager.default.fileExists(atPath: file) {
            throw ExternalTool.Failure(command: ["build-guest.sh"], status: 0, output: "\(file) is missing after the build")
        }
        return image
    }
}
