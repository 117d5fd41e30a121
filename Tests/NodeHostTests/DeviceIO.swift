import CFuse3
import Glibc
import NodeHost

/// Raw reads and writes on device nodes and files, buffered or O_DIRECT, for the tests.
enum DeviceIO {
    static func open(_ path: String, write: Bool, direct: Bool) throws -> Int32 {
        let flags = (write ? O_RDWR : O_RDONLY) | (direct ? strata_o_direct() : 0) | O_CLOEXEC
        let fd = Glibc.open(path, flags)
        if fd < 0 { throw NodeHostError(.systemCall, "open \(path)", errno: errno) }
        return fd
    }

    /// Writes `bytes` at `offset` through a 4 KiB-aligned buffer (as O_DIRECT requires).
    static func write(_ bytes: [UInt8], to path: String, at offset: UInt64, direct: Bool, sync: Bool = false) throws {
        let fd = try open(path, write: true, direct: direct)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        var done = 0
        while done < bytes.count {
            let count = pwrite(fd, buffer.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if count < 0 { throw NodeHostError(.systemCall, "pwrite \(path)", errno: errno) }
            done += count
        }
        if sync && fsync(fd) != 0 { throw NodeHostError(.systemCall, "fsync \(path)", errno: errno) }
    }

    static func read(_ path: String, at offset: UInt64, count: Int, direct: Bool) throws -> [UInt8] {
        let fd = try open(path, write: false, direct: direct)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { buffer.deallocate() }
        var done = 0
        while done < count {
            let got = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            if got < 0 { throw NodeHostError(.systemCall, "pread \(path)", errno: errno) }
            if got == 0 { break }
            done += got
        }
        return Array(UnsafeRawBufferPointer(rebasing: buffer[0..<done]))
    }

    static func sync(_ path: String) throws {
        let fd = try open(path, write: false, direct: false)
        defer { close(fd) }
        if fsync(fd) != 0 { throw NodeHostError(.systemCall, "fsync \(path)", errno: errno) }
    }

    /// The errno of opening `path` for writing and writing one block, or 0 when it worked.
    static func writeError(_ path: String) -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { return errno }
        defer { close(fd) }
        var block = [UInt8](repeating: 0xAB, count: 4096)
        if pwrite(fd, &block, block.count, 0) < 0 { return errno }
        if fsync(fd) != 0 { return errno }
        return 0
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw NodeHostError(.systemCall, "create \(path)", errno: errno) }
        defer { close(fd) }
        if bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) != bytes.count {
            throw NodeHostError(.systemCall, "write \(path)", errno: errno)
        }
        if fsync(fd) != 0 { throw NodeHostError(.systemCall, "fsync \(path)", errno: errno) }
    }

    /// Writes `block` `count` times into a new file, then fsyncs it.
    static func writeFile(_ path: String, repeating block: [UInt8], count: Int) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw NodeHostError(.systemCall, "create \(path)", errno: errno) }
        defer { close(fd) }
        for _ in 0..<count where block.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) != block.count {
            throw NodeHostError(.systemCall, "write \(path)", errno: errno)
        }
        if fsync(fd) != 0 { throw NodeHostError(.systemCall, "fsync \(path)", errno: errno) }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw NodeHostError(.systemCall, "open \(path)", errno: errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count < 0 { throw NodeHostError(.systemCall, "read \(path)", errno: errno) }
            if count == 0 { return result }
            result += chunk[0..<count]
        }
    }
}
