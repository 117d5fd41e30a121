import CFuse3
import Glibc
import KernelFiles

/// The one place NodeHost talks to the kernel directly: each wrapper retries on EINTR and
/// turns a failure into a `NodeHostError` that names the call, its subject and the errno.
enum Syscall {
    /// Runs `body` until it stops failing with EINTR; throws on any other -1.
    @discardableResult
    static func retrying<T: BinaryInteger>(_ what: @autoclosure () -> String, _ body: () -> T) throws -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let error = Glibc.errno
            if error == EINTR { continue }
            throw failure(what(), errno: error)
        }
    }

    /// A structured error for a failed call, its code chosen from the errno.
    static func failure(_ what: String, errno error: Int32) -> NodeHostError {
        let code: NodeHostError.Code
        switch error {
        case ENOENT, ENXIO, ENODEV: code = .notFound
        case EBUSY: code = .busy
        case EEXIST: code = .alreadyExists
        case ENOSPC, ENOMEM, EMFILE, ENFILE: code = .resourceExhausted
        case ENOTTY, EOPNOTSUPP, ENOSYS: code = .unsupported
        default: code = .systemCall
        }
        return NodeHostError(code, what, errno: error)
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
        try retrying("open \(path)") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// O_PATH: a descriptor that only names a file (no I/O, nothing asked of its filesystem).
    static var pathOnly: Int32 { strata_o_path() }

    /// A descriptor that only names `path` (O_PATH): no I/O, no permission needed on the object.
    static func openPath(_ path: String) throws -> Int32 {
        try open(path, pathOnly)
    }

    /// Opens `path` (relative) beneath the directory open as `root`; see `strata_open_beneath`.
    static func openBeneath(_ root: Int32, _ path: String, _ flags: Int32, mode: mode_t = 0, naming subject: String) throws -> Int32 {
        try retrying("open \(subject)") { strata_open_beneath(root, path, flags | O_CLOEXEC, mode) }
    }

    /// mkdir(2) of one name in the directory open as `parent`; an existing entry is fine.
    static func makeDirectory(in parent: Int32, named name: String, mode: mode_t, naming subject: String) throws {
        if mkdirat(parent, name, mode) != 0 && Glibc.errno != EEXIST {
            throw failure("mkdir \(subject)", errno: Glibc.errno)
        }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// Opens `path`, runs `body` with the descriptor, and closes it whatever happens.
    @discardableResult
    static func withFile<T>(_ path: String, _ flags: Int32, _ body: (Int32) throws -> T) throws -> T {
        let fd = try open(path, flags)
        defer { close(fd) }
        return try body(fd)
    }

    static func ioctl(_ fd: Int32, _ request: UInt, pointer: UnsafeMutableRawPointer, _ what: @autoclosure () -> String) throws {
        try retrying(what()) { strata_ioctl_ptr(fd, request, pointer) }
    }

    @discardableResult
    static func ioctl(_ fd: Int32, _ request: UInt, value: UInt, _ what: @autoclosure () -> String) throws -> Int32 {
        try retrying(what()) { strata_ioctl_int(fd, request, value) }
    }

    static func status(of path: String) throws -> stat {
        var result = stat()
        try retrying("stat \(path)") { Int32(stat(path, &result)) }
        return result
    }

    /// `stat`, or nil when the path does not exist.
    static func statusIfPresent(of path: String) throws -> stat? {
        var result = stat()
        if stat(path, &result) == 0 { return result }
        if Glibc.errno == ENOENT || Glibc.errno == ENOTDIR { return nil }
        throw failure("stat \(path)", errno: Glibc.errno)
    }

    static func filesystemStatus(of path: String) throws -> statvfs {
        var result = statvfs()
        try retrying("statvfs \(path)") { Int32(statvfs(path, &result)) }
        return result
    }

    static func mount(source: String?, target: String, fsType: String?, flags: UInt, data: String?) throws {
        let what = "mount \(source ?? "none") on \(target)" + (fsType.map { " type \($0)" } ?? "")
        try retrying(what) { Glibc.mount(source, target, fsType, flags, data) }
    }

    static func unmount(_ target: String, flags: Int32) throws {
        try retrying("umount \(target)") { Glibc.umount2(target, flags) }
    }

    /// `mkdir -p`: creates each missing component; existing directories are fine.
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var built = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            built += "/" + component
            if Glibc.mkdir(built, mode) != 0 && Glibc.errno != EEXIST {
                throw failure("mkdir \(built)", errno: Glibc.errno)
            }
        }
    }

    static func makeNode(_ path: String, mode: mode_t, device: dev_t) throws {
        if Glibc.mknod(path, mode, device) != 0 && Glibc.errno != EEXIST {
            throw failure("mknod \(path)", errno: Glibc.errno)
        }
    }

    /// Writes `text` to an existing file such as a sysfs attribute.
    static func writeText(_ text: String, to path: String) throws {
        try withFile(path, O_WRONLY) { fd in
            var bytes = Array(text.utf8)
            try retrying("write \(path)") { Glibc.write(fd, &bytes, bytes.count) }
        }
    }

    /// Reads a sysfs or procfs file to its end (`KernelFile`); nil when it does not exist.
    static func readText(_ path: String) throws -> String? {
        do {
            return try KernelFile.read(path)
        } catch let error as KernelFile.ReadError {
            throw failure("read \(path)", errno: error.errno)
        }
    }

    /// The names in a directory, without "." and ".."; empty when it does not exist.
    static func directoryEntries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The canonical absolute path, or the path as given when it cannot be resolved
    /// (a dead FUSE mount answers ENOTCONN to every lookup).
    static func canonicalPath(_ path: String) -> String {
        resolvedPath(path) ?? path
    }

    /// realpath(3): the canonical absolute path, or nil when it cannot be resolved.
    static func resolvedPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
