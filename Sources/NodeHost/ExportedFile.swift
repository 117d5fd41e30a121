import Glibc
import Synchronization

/// One backend as the FUSE filesystem shows it: a regular file with a fixed inode number (and
/// generation), the same in every process that serves the connection. Requests find it through
/// the exporter's `InodeTable`, so I/O on an open file never takes the exporter's lock.
final class ExportedFile: Sendable {
    let name: String
    let inode: UInt64
    let generation: UInt64
    let backend: any BlockBackend
    /// Open handles from the kernel (a loop device holds one while attached).
    let openHandles = Atomic<Int>(0)

    init(name: String, inode: UInt64, generation: UInt64, backend: any BlockBackend) {
        self.name = name
        self.inode = inode
        self.generation = generation
        self.backend = backend
    }

    /// The attributes the kernel sees: a root-only regular file as large as the backend.
    func attributes(modified time: timespec) -> stat {
        var attributes = stat()
        let size = backend.size
        attributes.st_ino = __ino_t(inode)
        attributes.st_mode = S_IFREG | 0o600
        attributes.st_nlink = 1
        attributes.st_size = off_t(clamping: size)
        attributes.st_blksize = 4096
        attributes.st_blocks = blkcnt_t(clamping: (size + 511) / 512)
        attributes.st_atim = time
        attributes.st_mtim = time
        attributes.st_ctim = time
        return attributes
    }

    /// The longest name accepted: NAME_MAX.
    static let maximumNameLength = 255

    /// Rejects names that are not a single safe path component: empty, ".", "..", containing
    /// "/", NUL or control characters (they would break mountinfo and sysfs parsing), or longer
    /// than NAME_MAX bytes.
    static func validate(name: String) throws {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumNameLength else {
            throw NodeHostError(.invalidArgument, "export name must be 1...\(maximumNameLength) bytes, got \(bytes.count)")
        }
        guard name != ".", name != "..", !name.contains("..") else {
            throw NodeHostError(.invalidArgument, "export name \(name.debugDescription) must not be or contain \"..\"")
        }
        guard !bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 < 0x20 || $0 == 0x7f }) else {
            throw NodeHostError(.invalidArgument, "export name \(name.debugDescription) must not contain '/', NUL or control characters")
        }
    }
}
