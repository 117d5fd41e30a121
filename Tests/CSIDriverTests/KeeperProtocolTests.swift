#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import FuseKeeperProtocol
import StrataTestSupport
import Testing

/// The keeper on its own: what it holds, hands back and drops, and what it refuses.
@Suite("strata-fuse-keeper protocol", .serialized, .enabled(if: NodeEnvironment.available), .blockingTolerant)
struct KeeperProtocolTests {
    @Test func holdsListsAndDropsDescriptors() throws {
        let directory = try TemporaryDirectory()
        let keeper = try KeeperProcess(directory: directory.path)
        var info = stat()
        #expect(stat(keeper.socketPath, &info) == 0 && info.st_mode & 0o777 == 0o600, "the socket must be 0600")
        let client = FuseKeeperClient(socketPath: keeper.socketPath)
        let fuse = open("/dev/fuse", O_RDWR)
        #expect(fuse >= 0)
        defer { close(fuse) }
        let cookie = String(repeating: "ab", count: 16)
        let entry = KeeperEntry(volumeID: "pvc-1 with spaces/ünïcode", inode: 7, cookie: cookie, protocolMinor: 41, maxReadahead: 131072)
        try client.hold(entry, descriptor: fuse)
        try client.hold(KeeperEntry(volumeID: "other", inode: 8, cookie: cookie, protocolMinor: 41, maxReadahead: 131072), descriptor: fuse)

        let listed = try client.list()
        defer { listed.forEach { close($0.descriptor) } }
        #expect(listed.map(\.entry).sorted { $0.inode < $1.inode } == [entry, KeeperEntry(volumeID: "other", inode: 8, cookie: cookie, protocolMinor: 41, maxReadahead: 131072)])
        for item in listed {
            var status = stat()
            #expect(fstat(item.descriptor, &status) == 0 && status.st_mode & S_IFMT == S_IFCHR && UInt(status.st_rdev) == fuseDevice())
        }

        try client.drop(volumeID: "other")
        try client.drop(volumeID: "never held")
        #expect(try keeper.heldVolumes() == [entry.volumeID])

        // Anything but a /dev/fuse descriptor is refused, and so is a malformed entry.
        var pipeEnds: [Int32] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)
        defer { pipeEnds.forEach { close($0) } }
        #expect(throws: KeeperSocket.Failure.self) { try client.hold(entry, descriptor: pipeEnds[0]) }
        #expect(throws: KeeperSocket.Failure.self) {
            try client.hold(KeeperEntry(volumeID: "x", inode: 9, cookie: "not-a-cookie", protocolMinor: 41, maxReadahead: 0), descriptor: fuse)
        }
        #expect(try keeper.heldVolumes() == [entry.volumeID])
    }

    private func fuseDevice() -> UInt {
        var status = stat()
        return stat("/dev/fuse", &status) == 0 ? UInt(status.st_rdev) : 0
    }

    @Test func aSecondKeeperOnTheSameSocketRefusesToStart() throws {
        let directory = try TemporaryDirectory()
        let keeper = try KeeperProcess(directory: directory.path)
        let keeperBinary = (DriverProcess.binaryPath as NSString).deletingLastPathComponent + "/strata-fuse-keeper"
        let second = try ExternalTool.outcome(keeperBinary, ["--socket", keeper.socketPath], errors: .separate)
        #expect(second.status == 1)
        #expect(try keeper.heldVolumes().isEmpty, "the first keeper still answers")
    }
}
