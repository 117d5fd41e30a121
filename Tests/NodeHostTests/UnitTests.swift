import Foundation
import Glibc
import KernelFiles
import StrataTestSupport
import Testing

@testable import NodeHost

/// Parsing and validation that need no devices.
@Suite(.blockingTolerant) struct UnitTests {
    @Test("export names must be one safe path component", arguments: [
        "", ".", "..", "a/b", "/a", "a\u{0}b", "x..y", "new\nline", "tab\t", String(repeating: "n", count: 256),
    ])
    func rejectedNames(name: String) {
        #expect(throws: NodeHostError.self) { try ExportedFile.validate(name: name) }
    }

    @Test("ordinary volume ids are valid export names", arguments: [
        "pvc-0b7f3c1e-6d2a-4c4f-9a57-3c2d1e0f9a88", "a", "vol.1", "snap_2-x", String(repeating: "n", count: 255),
    ])
    func acceptedNames(name: String) throws {
        try ExportedFile.validate(name: name)
    }

    @Test("opening beneath a directory: the kernel follows links that stay inside and refuses those that leave")
    func openingBeneath() throws {
        let base = NSTemporaryDirectory() + "strata-beneath-\(UUID().uuidString)"
        let root = base + "/root"
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: root + "/real", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: base + "/outside", withIntermediateDirectories: true)
        #expect(symlink("real", root + "/inside") == 0)
        #expect(symlink("../outside", root + "/up") == 0)
        #expect(symlink(base + "/outside", root + "/absolute") == 0)

        // What stands between a checked path and its use, when a link is swapped in meanwhile.
        let rootFD = try Syscall.open(root, Syscall.pathOnly | O_DIRECTORY)
        defer { Syscall.close(rootFD) }
        Syscall.close(try Syscall.openBeneath(rootFD, "inside", Syscall.pathOnly, naming: "inside"))
        for escaping in ["up", "absolute", "../outside", "real/../../outside"] {
            #expect { Syscall.close(try Syscall.openBeneath(rootFD, escaping, Syscall.pathOnly, naming: escaping)) } throws: {
                ($0 as? NodeHostError)?.errno == EXDEV
            }
        }

        let confined = ConfinedDirectory(root)
        try confined.makeDirectories(root + "/inside/a/b")
        #expect(FileManager.default.fileExists(atPath: root + "/real/a/b"))
        try confined.makeFile(root + "/inside/a/file")
        #expect(FileManager.default.fileExists(atPath: root + "/real/a/file"))
        for escaping in [root + "/up/a", root + "/absolute/a", root + "/real/../../outside/a", root, base + "/outside/a"] {
            #expect { try confined.makeDirectories(escaping) } throws: { ($0 as? NodeHostError)?.code == .invalidArgument }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: base + "/outside").isEmpty)
    }

    @Test("mountinfo lines are parsed, escapes undone")
    func mountInfoParsing() throws {
        let line = #"36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue"#
        let info = try #require(MountTable.parse(line))
        #expect(info.mountID == 36 && info.parentID == 35)
        #expect(info.major == 98 && info.minor == 0)
        #expect(info.root == "/mnt1")
        #expect(info.mountPoint == "/mnt/with space")
        #expect(info.mountOptions == ["rw", "noatime"])
        #expect(info.fsType == "ext3" && info.source == "/dev/root")
        #expect(info.superOptions == ["rw", "errors=continue"])
        #expect(!info.isReadOnly)
        let bare = try #require(MountTable.parse("40 1 0:45 / /x ro - fuse.strata strata ro"))
        #expect(bare.isReadOnly && bare.fsType == "fuse.strata")
        #expect(MountTable.parse("garbage") == nil)
        #expect(MountTable.unescape(#"a\134b\011c"#) == "a\\b\tc")
    }

    @Test("the live mount table has the root mount")
    func liveMountTable() throws {
        #expect(try MountTable.read().contains { $0.mountPoint == "/" })
        #expect(try LinuxMounter().isMountPoint("/"))
        #expect(try LinuxMounter().mountInfo(for: "/tmp/definitely/not/mounted") == nil)
    }

    @Test("mount options split into flags and filesystem data")
    func mountOptions() throws {
        let (flags, data) = try MountOptions.parse(["noatime,nodev", "discard", "ro", "rw", "data=ordered"])
        #expect(flags == UInt(MS_NOATIME | MS_NODEV))
        #expect(data == "discard,data=ordered")
        #expect(throws: NodeHostError.self) { try MountOptions.parse(["bind"]) }
        #expect(throws: NodeHostError.self) { try MountOptions.parse(["bad\nword"]) }
    }

    @Test("backend errors map to errno values")
    func errorMapping() {
        #expect(FuseOperations.errorNumber(for: NodeHostError(.systemCall, "x", errno: EROFS)) == EROFS)
        #expect(FuseOperations.errorNumber(for: NodeHostError(.resourceExhausted, "x")) == ENOSPC)
        #expect(FuseOperations.errorNumber(for: POSIXError(.EACCES)) == EACCES)
        #expect(FuseOperations.errorNumber(for: CancellationError()) == EIO)
    }

    @Test("external tools run with argument arrays and report stderr on failure")
    func commands() throws {
        #expect(try Command.check("echo", ["a b", "$HOME"]) == "a b $HOME\n")
        #expect { try Command.check("ls", ["/definitely-missing"]) } throws: { error in
            guard let error = error as? NodeHostError else { return false }
            return error.code == .commandFailed && error.message.contains("definitely-missing")
        }
        #expect { try Command.check("no-such-tool-strata", []) } throws: { ($0 as? NodeHostError)?.code == .unsupported }
    }
}
