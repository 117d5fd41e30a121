import Foundation
import Glibc
import KernelFiles
import StrataTestSupport
import Testing

@Suite("KernelFile: reads /proc and /sys files to their end", .blockingTolerant)
struct KernelFileTests {
    /// A FIFO behaves as a seq_file does for the point that matters: its first read returns less
    /// than asked although more follows. Foundation's whole-file read stops there (the cause of
    /// the "vanishing mounts": the newest lines of /proc/self/mountinfo were never read).
    @Test("a file whose first read is short is read whole")
    func shortFirstRead() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-kernelfile-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/seq"
        try #require(mkfifo(fifo, 0o600) == 0)
        let first = [UInt8](repeating: UInt8(ascii: "a"), count: 3000)
        let second = [UInt8](repeating: UInt8(ascii: "b"), count: 5000)
        let writer = Thread {
            let fd = open(fifo, O_WRONLY)
            guard fd >= 0 else { return }
            _ = first.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            usleep(100_000)
            _ = second.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        writer.start()
        let bytes = try #require(try KernelFile.readBytes(fifo))
        #expect(bytes == first + second)
    }

    @Test("a missing file reads as nil, and sysfs attributes are trimmed")
    func missingAndTrimmed() throws {
        #expect(try KernelFile.read("/proc/strata-no-such-file") == nil)
        #expect(try KernelFile.read("/proc/self/no/such/dir") == nil)
        let bootID = try #require(try KernelFile.readTrimmed("/proc/sys/kernel/random/boot_id"))
        #expect(bootID.count == 36 && !bootID.contains("\n"))
    }

    @Test("the live mount table is read whole: its last line is complete")
    func liveMountTable() throws {
        let text = try #require(try KernelFile.read("/proc/self/mountinfo"))
        #expect(text.hasSuffix("\n"))
        let mounts = try MountTable.read()
        #expect(mounts.contains { $0.mountPoint == "/" })
        #expect(mounts.count == text.split(separator: "\n").count, "every line parses")
    }

    @Test("device numbers are composed as glibc's makedev composes them")
    func deviceNumbers() {
        #expect(MountInfo.deviceNumber(major: 0, minor: 45) == 45)
        #expect(MountInfo.deviceNumber(major: 7, minor: 3) == 0x703)
        #expect(MountInfo.deviceNumber(major: 259, minor: 300) == (0x103 << 8 | 0x2c) | (0x1 << 20))
    }
}
