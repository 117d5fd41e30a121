import Glibc

/// The one reader of /proc and /sys files, for the product and the tests alike.
///
/// Why not Foundation: on Swift 6.3.1 `String(contentsOfFile:)` and `Data(contentsOf:)` read a
/// file whose size reads as 0 in 4 KiB chunks and stop at the first short read. A seq_file such
/// as /proc/self/mountinfo hands out whole lines only, so its first read is always short and
/// Foundation returns the first ~4 KiB: the newest mounts go missing while they are mounted.
/// This reader reads until read(2) returns 0. `KernelFileRuleTests` keeps Foundation's
/// whole-file reads away from /proc and /sys everywhere in the tree.
public enum KernelFile {
    /// A failure to open or read a kernel file, with its errno.
    public struct ReadError: Error, CustomStringConvertible {
        public let path: String
        public let errno: Int32
        public var description: String { "reading \(path) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
    }

    /// The whole file as text; nil when it does not exist (ENOENT, ENOTDIR, ENXIO: a sysfs
    /// attribute of a device that is not bound reads as ENXIO).
    public static func read(_ path: String) throws -> String? {
        guard let bytes = try readBytes(path) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The whole file as bytes; nil when it does not exist.
    public static func readBytes(_ path: String) throws -> [UInt8]? {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR || errno == ENXIO { return nil }
            throw ReadError(path: path, errno: errno)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == ENXIO || errno == ENODEV { return nil }  // unbound while we read
                throw ReadError(path: path, errno: errno)
            }
            bytes += chunk[0..<count]
        }
    }

    /// The file's text without surrounding white space (sysfs attributes end in a newline).
    public static func readTrimmed(_ path: String) throws -> String? {
        guard let text = try read(path) else { return nil }
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" }
        return String(text.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
