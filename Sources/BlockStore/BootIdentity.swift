import Foundation
import KernelFiles

/// Which boot of the machine this is (/proc/sys/kernel/random/boot_id). A dirty map records it:
/// data written but not yet mapped when a process died in the same boot is still in the page
/// cache (a SIGKILL cannot take back what a pwrite copied), so recovery can keep it; after a
/// reboot it may be torn or stale, and recovery punches it out.
package struct BootIdentity: Sendable, Equatable, CustomStringConvertible {
    package let bytes: [UInt8]

    package init?(bytes: [UInt8]) {
        guard bytes.count == 16, bytes.contains(where: { $0 != 0 }) else { return nil }
        self.bytes = bytes
    }

    /// Parses the kernel's form, 8-4-4-4-12 hexadecimal digits.
    package init?(text: String) {
        let digits = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).filter { $0 != "-" })
        guard digits.count == 32 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: 32, by: 2) {
            guard let byte = UInt8(String(digits[index...index + 1]), radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(bytes: bytes)
    }

    package var description: String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// This boot; STRATA_TEST_BOOT_ID replaces it so that a test can play a reboot between a
    /// crash and the reopen. Nil when neither can be read: recovery then punches, as after a reboot.
    package static var current: BootIdentity? {
        if let fake = ProcessInfo.processInfo.environment["STRATA_TEST_BOOT_ID"] { return BootIdentity(text: fake) }
        return kernel
    }

    private static let kernel: BootIdentity? = {
        guard let text = try? KernelFile.read("/proc/sys/kernel/random/boot_id") else { return nil }
        return BootIdentity(text: text)
    }()
}
