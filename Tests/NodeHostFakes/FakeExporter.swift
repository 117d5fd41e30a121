import NodeHost
import Synchronization

/// A `VolumeExporter` in memory: each added backend becomes a `FakeExportedFile` at
/// `<directory>/<name>` in a shared `FakeExportTable`, where the fake attacher and the tests
/// reach its bytes. Nothing is written to disk and nothing needs root. It keeps the rules the
/// stager relies on: adding twice is idempotent, another backend under a taken name or a taken
/// inode is refused, a file a device holds open cannot be removed, and a stopped exporter's
/// files fail I/O (the devices over them are dead until detached).
public final class FakeExporter: VolumeExporter {
    public let directory: String
    public let table: FakeExportTable
    private let state = Mutex(State())

    private struct State {
        var phase = Phase.idle
        var byName: [String: FakeExportedFile] = [:]
    }

    private enum Phase { case idle, running, stopped }

    public init(directory: String, table: FakeExportTable) {
        self.directory = directory
        self.table = table
    }

    @discardableResult
    public func add(name: String, backend: any BlockBackend, identity: ExportIdentity?) throws -> String {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw NodeHostError(.invalidArgument, "\(name) is not a file name")
        }
        let path = path(of: name)
        try state.withLock { state in
            guard state.phase != .stopped else { throw NodeHostError(.notRunning, "exporter at \(directory) is stopped") }
            if let existing = state.byName[name] {
                guard (try? existing.liveBackend()) === backend else {
                    throw NodeHostError(.alreadyExists, "\(name) is already exported with another backend")
                }
                return
            }
            let taken = Set(state.byName.values.map(\.identity.inode))
            guard let chosen = identity ?? ExportIdentity.inodes.first(where: { !taken.contains($0) }).map({ ExportIdentity(inode: $0, generation: 1) }),
                  ExportIdentity.inodes.contains(chosen.inode) else {
                throw NodeHostError(.resourceExhausted, "no free inode for \(name)")
            }
            guard !taken.contains(chosen.inode) else {
                throw NodeHostError(.alreadyExists, "inode \(chosen.inode) is already exported under another name")
            }
            state.byName[name] = table.insert(path: path, backend: backend, identity: chosen)
        }
        return path
    }

    public func remove(name: String) throws {
        try state.withLock { state in
            guard let file = state.byName[name] else { return }
            let handles = file.openHandles.load(ordering: .acquiring)
            guard handles == 0 else {
                throw NodeHostError(.busy, "\(name) is open \(handles) time(s) (is a device still attached?)")
            }
            state.byName[name] = nil
            table.remove(path: file.path)
        }
    }

    @discardableResult
    public func refreshSize(name: String) throws -> UInt64 {
        let file = try state.withLock { state in
            guard state.phase == .running else { throw NodeHostError(.notRunning, "exporter at \(directory) is not running") }
            guard let file = state.byName[name] else { throw NodeHostError(.notFound, "\(name) is not exported") }
            return file
        }
        return try file.liveBackend().size
    }

    public func path(of name: String) -> String { "\(directory)/\(name)" }

    public var names: [String] { state.withLock { $0.byName.keys.sorted() } }

    public func identity(of name: String) -> ExportIdentity? { state.withLock { $0.byName[name]?.identity } }

    public func start() throws {
        try state.withLock { state in
            guard state.phase == .idle else { throw NodeHostError(.alreadyExists, "exporter at \(directory) was already started") }
            state.phase = .running
        }
    }

    /// Like the FUSE exporter's stop with devices still attached: the files go away and I/O on
    /// the open ones fails from now on.
    public func stop() {
        let files = state.withLock { state in
            defer { state.byName = [:]; state.phase = .stopped }
            return Array(state.byName.values)
        }
        for file in files {
            file.die()
            table.remove(path: file.path)
        }
    }
}
