#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import StrataTestSupport

/// An empty network namespace (only loopback, down), named under /run/netns: stands in for a
/// node of PeerCluster where a test needs processes started "on a node" but no network between
/// them (the QEMU harness migrates over a Unix socket, which the shared filesystem carries).
/// `tearDown()` deletes it; call it in a `defer`.
final class BareNetworkNamespace: @unchecked Sendable {
    let name: String

    init(label: String) throws {
        name = "strata-\(label)-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        try ExternalTool.run("ip", ["netns", "add", name])
    }

    /// The namespace's inode as the kernel names it (e.g. "net:[4026532281]"), to check where a
    /// process really runs.
    var identity: String? {
        var info = stat()
        guard stat("/run/netns/\(name)", &info) == 0 else { return nil }
        return "net:[\(info.st_ino)]"
    }

    /// The network namespace a process runs in, as "net:[inode]".
    static func identity(ofProcess pid: pid_t) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")
    }

    func tearDown() {
        _ = try? ExternalTool.run("ip", ["netns", "del", name])
    }
}
