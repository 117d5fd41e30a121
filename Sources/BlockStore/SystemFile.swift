import CGlibcFlags
import Glibc

/// A raw file descriptor with the few system calls the store needs: positioned I/O that retries
/// short transfers and EINTR, fsync, hole punching and hole seeking. All system calls of the
/// store's data path go through here.
/// A read that asked for cached data only would have waited for the disk.
struct NotCached: Error {}

package struct SystemFile: Sendable, Hashable {
    let descriptor: Int32

    static func open(_ path: String, create: Bool = false, exclusive: Bool = false, readOnly: Bool = false) throws -> SystemFile {
        var flags: Int32 = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        if create { flags |= O_CREAT }
        if exclusive { flags |= O_EXCL }
        let fd = retryingEINTR { Glibc.open(path, flags, 0o600) }
        guard fd >= 0 else { throw StoreError.system("open \(path)", errno: errno) }
        return SystemFile(descriptor: fd)
    }

    /// Opens `path` for writes with O_DIRECT (past the page cache); nil where the filesystem
    /// refuses direct I/O.
    static func openForDirectWrites(_ path: String) -> SystemFile? {
        let fd = retryingEINTR { Glibc.open(path, O_WRONLY | O_CLOEXEC | strata_glibc_o_direct()) }
        return fd >= 0 ? SystemFile(descriptor: fd) : nil
    }

    /// Writes `bytes` through a descriptor opened by `openForDirectWrites`; the address, offset
    /// and length must suit the device's alignment. False, with nothing written, when the kernel
    /// refuses them (EINVAL): the caller writes through the page cache instead.
    func writeDirect(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL && done == 0 { return false }
                throw StoreError.system("pwrite (direct)", errno: errno)
            }
            done += n
        }
        return true
    }

    package func close() {
        _ = Glibc.close(descriptor)
    }

    /// Reads exactly `buffer.count` bytes; what lies past the end of the file reads as zeros.
    /// `cachedOnly`: reads only what the page cache holds, and throws `NotCached` (having
    /// filled part of `buffer` perhaps) where it would have to wait for the disk.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, cachedOnly: Bool = false) throws {
        var done = 0
        while done < buffer.count {
            let n = cachedOnly
                ? strata_pread_nowait(descriptor, buffer.baseAddress! + done, UInt(buffer.count - done), UInt(offset) + UInt(done))
                : Glibc.pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                if cachedOnly { throw NotCached() }
                throw StoreError.system("pread", errno: errno)
            }
            if n == 0 {
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += n
        }
    }

    package func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.system("pwrite", errno: errno)
            }
            done += n
        }
    }

    /// Makes written data durable (fdatasync: metadata needed to read it back included).
    func synchronizeData() throws {
        guard retryingEINTR({ fdatasync(descriptor) }) == 0 else { throw StoreError.system("fdatasync", errno: errno) }
    }

    /// Starts writing back the dirty pages of the whole file without waiting for them
    /// (sync_file_range with SYNC_FILE_RANGE_WRITE), so that a later fdatasync finds little left
    /// to write: a file written in one long stream (a layer copied from a peer) then reaches the
    /// disk while it arrives instead of all at once at the end. Advisory: where the call is not
    /// available it does nothing (the fdatasync still makes the data durable).
    func startWriteback() {
        guard let call = Self.syncFileRange else { return }
        _ = retryingEINTR { call(descriptor, 0, 0, 2 /* SYNC_FILE_RANGE_WRITE */) }
    }

    /// glibc's sync_file_range, looked up at run time: Swift's Glibc module does not declare it
    /// (it needs _GNU_SOURCE).
    private static let syncFileRange: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32)? = {
        guard let symbol = dlsym(nil, "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
    }()

    func synchronize() throws {
        guard retryingEINTR({ fsync(descriptor) }) == 0 else { throw StoreError.system("fsync", errno: errno) }
    }

    /// Deallocates a range so that it reads as zeros; writes zeros where the filesystem cannot punch holes.
    func punchHole(at offset: UInt64, length: UInt64) throws {
        if let fallocate = SystemFile.fallocateFunction {
            let punchHoleKeepSize: Int32 = 0x02 | 0x01
            if retryingEINTR({ fallocate(descriptor, punchHoleKeepSize, Int64(offset), Int64(length)) }) == 0 { return }
            let code = errno
            guard code == EOPNOTSUPP || code == ENOSYS else { throw StoreError.system("fallocate(punch hole)", errno: code) }
        }
        let fileSize = try size()
        guard offset < fileSize else { return }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(min(length, fileSize - offset)), alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        try write(UnsafeRawBufferPointer(zeros), at: offset)
    }

    /// Offset of the first byte of data at or after `offset`, or nil when only holes follow.
    func nextData(from offset: UInt64) -> UInt64? {
        let seekData: Int32 = 3
        let result = lseek(descriptor, off_t(offset), seekData)
        return result < 0 ? nil : UInt64(result)
    }

    /// Offset of the first hole at or after `offset` (the end of the file counts as a hole).
    func nextHole(from offset: UInt64) -> UInt64 {
        let seekHole: Int32 = 4
        let result = lseek(descriptor, off_t(offset), seekHole)
        return result < 0 ? offset : UInt64(result)
    }

    func size() throws -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw StoreError.system("fstat", errno: errno) }
        return UInt64(info.st_size)
    }

    /// Bytes the filesystem has allocated for the file.
    func diskUsage() throws -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw StoreError.system("fstat", errno: errno) }
        return UInt64(info.st_blocks) * 512
    }

    private typealias FallocateFunction = @convention(c) (Int32, Int32, Int64, Int64) -> Int32

    /// Looked up at run time: Swift's Glibc module hides GNU extensions such as fallocate.
    private static let fallocateFunction: FallocateFunction? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "fallocate") else { return nil }
        return unsafeBitCast(symbol, to: FallocateFunction.self)
    }()
}

/// Directory-level system calls.
enum SystemDirectory {
    static func create(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw StoreError.system("mkdir \(path)", errno: errno)
        }
    }

    /// Makes creations and removals of entries in `path` durable.
    static func synchronize(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.system("open \(path)", errno: errno) }
        defer { _ = Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw StoreError.system("fsync \(path)", errno: errno) }
    }

    static func entries(of path: String) throws -> [String] {
        guard let directory = opendir(path) else { throw StoreError.system("opendir \(path)", errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func removeFile(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT {
            throw StoreError.system("unlink \(path)", errno: errno)
        }
    }

    static func fileExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// Total and free bytes of the filesystem holding `path`.
    static func space(of path: String) throws -> (total: UInt64, free: UInt64) {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { throw StoreError.system("statvfs \(path)", errno: errno) }
        let unit = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * unit, UInt64(info.f_bavail) * unit)
    }
}

/// Retries a system call interrupted by a signal.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result < 0 && errno == EINTR { continue }
        return result
    }
}
