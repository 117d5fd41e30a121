#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import KernelFiles
import StrataTestSupport

/// A loop device over a sparse image file of its own, with nothing on it: a raw block device for
/// tests that need one without Strata (the QEMU harness's shared disk). `tearDown()` detaches it
/// and removes the file; call it in a `defer`.
final class LoopDevice: @unchecked Sendable {
    let directory: TemporaryDirectory
    let imagePath: String
    let device: String

    init(mebibytes: Int, directIO: Bool = false) throws {
        directory = try TemporaryDirectory()
        imagePath = directory.path + "/disk.img"
        guard FileManager.default.createFile(atPath: imagePath, contents: nil), truncate(imagePath, off_t(mebibytes) << 20) == 0 else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        device = try ExternalTool.run("losetup", ["--find", "--show", "--direct-io=\(directIO ? "on" : "off")", imagePath])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Cuts the image file to `mebibytes` and makes the device take the new size: I/O past the
    /// new end fails with EIO, while users keep the device open. How the QEMU harness injects I/O
    /// errors without device-mapper, which this machine's kernel lacks. Writes in flight between
    /// the cut and the resize extend the file again, so both are repeated until the size holds.
    func shrink(toMebibytes mebibytes: Int) throws {
        let sectors = mebibytes << 11
        let sizeFile = "/sys/block/\((device as NSString).lastPathComponent)/size"
        for _ in 0..<20 {
            guard truncate(imagePath, off_t(mebibytes) << 20) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            try ExternalTool.run("losetup", ["--set-capacity", device])
            let current = ((try? KernelFile.readTrimmed(sizeFile)) ?? nil).flatMap { Int($0) }
            if current == sectors { return }
        }
        throw POSIXError(.EBUSY)
    }

    func tearDown() {
        _ = try? ExternalTool.run("losetup", ["-d", device])
    }
}
