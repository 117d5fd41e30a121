#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

/// A fresh directory, removed with everything in it when the value goes away. Where it is made
/// is the caller's choice (`Placement`): store logic tests want tmpfs, node and driver tests need
/// a short path on a real filesystem.
public final class TemporaryDirectory: @unchecked Sendable {
    public enum Placement: Sendable {
        /// `/tmp/<label>-XXXXXX`, always: short, because Unix socket paths are limited to 107
        /// bytes, and on a real filesystem, because loop devices, FUSE and O_DIRECT need one.
        /// For the driver and node tests.
        case tmp
        /// tmpfs (`/dev/shm`) when it has more than 1 GiB free, else /tmp: fsync costs nothing
        /// there, so thousands of catalog commits take seconds. For store logic tests.
        /// STRATA_TEST_TMPDIR, when set, is used instead.
        case fast
        /// The real filesystem even where tmpfs has room: STRATA_TEST_TMPDIR, else /tmp. For store
        /// tests of what fsync or a filesystem costs or does.
        case disk
    }

    public let path: String

    public init(_ placement: Placement = .tmp, label: String = "strata") throws {
        let base = switch placement {
        case .tmp: "/tmp"
        case .fast: Self.fastBase
        case .disk: Self.override ?? "/tmp"
        }
        var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        path = String(cString: created)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    private static let override = ProcessInfo.processInfo.environment["STRATA_TEST_TMPDIR"]

    private static let fastBase: String = {
        if let override { return override }
        var info = statvfs()
        if statvfs("/dev/shm", &info) == 0, UInt64(info.f_bavail) * UInt64(info.f_frsize) > 1 << 30 { return "/dev/shm" }
        return "/tmp"
    }()
}
