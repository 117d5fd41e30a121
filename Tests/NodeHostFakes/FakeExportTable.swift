import NodeHost
import Synchronization

/// The files every fake exporter serves, by path: what the kernel would see under the
/// exporters' mount points. Exporters add and remove files here; the fake attacher opens them
/// for its devices. Shared, so that a simulated restart (a new exporter over the same
/// directory) and the devices left from before meet the way the kernel and FUSE do: a device
/// holds the file it was attached to, not the path, and a file of a dead exporter fails I/O.
public final class FakeExportTable: Sendable {
    private let files = Mutex<[String: FakeExportedFile]>([:])
    private let serials = Atomic<UInt64>(0)

    public init() {}

    /// The file served at `path` now, or nil.
    public func file(at path: String) -> FakeExportedFile? {
        files.withLock { $0[path] }
    }

    func insert(path: String, backend: any BlockBackend, identity: ExportIdentity) -> FakeExportedFile {
        let serial = serials.add(1, ordering: .relaxed).newValue
        let file = FakeExportedFile(path: path, serial: serial, backend: backend, identity: identity)
        files.withLock { $0[path] = file }
        return file
    }

    func remove(path: String) {
        files.withLock { _ = $0.removeValue(forKey: path) }
    }
}

/// One exported file. Its bytes are its backend's: the fake stands in for FUSE, which would
/// forward every read and write of the file to the backend.
public final class FakeExportedFile: Sendable {
    public let path: String
    /// Unique among every file the table ever held: a device matches its file by it, as a loop
    /// device matches by inode, never by path alone.
    public let serial: UInt64
    public let identity: ExportIdentity
    private let backend: any BlockBackend
    /// Devices holding the file open (a loop device holds one handle while attached).
    let openHandles = Atomic<Int>(0)
    /// False once its exporter stopped: like a FUSE connection gone, I/O on it fails.
    private let alive = Atomic<Bool>(true)

    init(path: String, serial: UInt64, backend: any BlockBackend, identity: ExportIdentity) {
        self.path = path
        self.serial = serial
        self.backend = backend
        self.identity = identity
    }

    public var isAlive: Bool { alive.load(ordering: .acquiring) }

    func die() { alive.store(false, ordering: .releasing) }

    /// The backend, for I/O through the file; fails with EIO once the exporter is gone.
    public func liveBackend() throws -> any BlockBackend {
        guard isAlive else { throw NodeHostError(.systemCall, "I/O on \(path): its exporter is gone", errno: 5) }
        return backend
    }
}
