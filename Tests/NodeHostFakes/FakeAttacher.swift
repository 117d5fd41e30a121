import NodeHost
import Synchronization

/// An `Attacher` in memory: "attaching" a file of a `FakeExportTable` gives it a device path
/// (/dev/fakeloopN) and holds the file open, as a loop device does, until it is detached. The
/// devices outlive the exporter that served their file (a restart must find and detach them).
/// Every attach and detach is recorded, and an attach can be told to fail, so a test can cut a
/// stage short at that point. As the kernel's loop driver does since Linux 5.19, a detach of a
/// device something holds (a mount of the fake mounter) only marks it: it goes when the last
/// holder lets go.
public final class FakeAttacher: Attacher {
    public enum Event: Equatable, Sendable {
        case attached(device: String, file: String, readOnly: Bool)
        case detached(device: String)
        /// Detached while held: the device stays until its last holder lets go.
        case detachDeferred(device: String)
        case attachFailed(file: String)
    }

    public let table: FakeExportTable
    private let state = Mutex(State())

    private struct State {
        var devices: [Int: Device] = [:]
        var events: [Event] = []
        var failures: [any Error & Sendable] = []
    }

    private struct Device {
        let file: FakeExportedFile
        let readOnly: Bool
        let directIO: Bool
        var holders = 0
        var detachPending = false
    }

    /// How many device numbers exist (the loop driver's max_loop).
    public let capacity: Int

    public init(table: FakeExportTable, capacity: Int = 64) {
        self.table = table
        self.capacity = capacity
    }

    /// Makes the next attach throw `error` (after it found the file), once.
    public func failNextAttach(with error: any Error & Sendable = NodeHostError(.resourceExhausted, "injected: no free loop device")) {
        state.withLock { $0.failures.append(error) }
    }

    public var events: [Event] { state.withLock { $0.events } }

    /// The file behind a device, for I/O through it; nil when no such device is attached.
    public func file(behind device: String) -> FakeExportedFile? {
        guard let number = Self.number(of: device) else { return nil }
        return state.withLock { $0.devices[number]?.file }
    }

    // MARK: Attacher

    public func attach(file path: String, readOnly: Bool, directIO: Bool) throws -> String {
        guard let file = table.file(at: path) else {
            throw NodeHostError(.systemCall, "stat \(path): no such file", errno: 2)
        }
        return try state.withLock { state in
            if let existing = state.devices.first(where: { $0.value.file === file && $0.value.readOnly == readOnly && !$0.value.detachPending }) {
                return Self.path(of: existing.key)
            }
            if !state.failures.isEmpty {
                state.events.append(.attachFailed(file: path))
                throw state.failures.removeFirst()
            }
            guard let number = (0..<capacity).first(where: { state.devices[$0] == nil }) else {
                throw NodeHostError(.resourceExhausted, "no free loop device could be bound to \(path)")
            }
            state.devices[number] = Device(file: file, readOnly: readOnly, directIO: directIO)
            file.openHandles.add(1, ordering: .sequentiallyConsistent)
            state.events.append(.attached(device: Self.path(of: number), file: path, readOnly: readOnly))
            return Self.path(of: number)
        }
    }

    @discardableResult
    public func detach(device: String) throws -> Bool {
        guard let number = Self.number(of: device) else { throw NodeHostError(.invalidArgument, "\(device) is not a loop device") }
        state.withLock { state in
            guard let held = state.devices[number] else { return }
            guard held.holders == 0 else {
                if !held.detachPending { state.events.append(.detachDeferred(device: device)) }
                state.devices[number]!.detachPending = true
                return
            }
            Self.remove(number, device: device, &state)
        }
        return true
    }

    private static func remove(_ number: Int, device: String, _ state: inout State) {
        guard let detached = state.devices.removeValue(forKey: number) else { return }
        detached.file.openHandles.subtract(1, ordering: .sequentiallyConsistent)
        state.events.append(.detached(device: device))
    }

    /// Something (a mount) holds the device open; nothing when it is not attached.
    public func hold(device: String) {
        guard let number = Self.number(of: device) else { return }
        state.withLock { state in state.devices[number]?.holders += 1 }
    }

    /// A holder let go; a device detached meanwhile goes with its last holder.
    public func release(device: String) {
        guard let number = Self.number(of: device) else { return }
        state.withLock { state in
            guard let held = state.devices[number] else { return }
            state.devices[number]!.holders = max(0, held.holders - 1)
            if held.holders <= 1, held.detachPending { Self.remove(number, device: device, &state) }
        }
    }

    /// Whether the device was attached read-only; nil when it is not attached.
    public func isReadOnly(device: String) -> Bool? {
        guard let number = Self.number(of: device) else { return nil }
        return state.withLock { $0.devices[number]?.readOnly }
    }

    @discardableResult
    public func detach(_ attachment: LoopAttachment) throws -> Bool {
        let same = state.withLock { $0.devices[attachment.number]?.file.serial == attachment.backingInode }
        guard same else { return true }
        return try detach(device: attachment.device)
    }

    @discardableResult
    public func refreshSize(device: String) throws -> UInt64 {
        guard let file = file(behind: device) else { throw NodeHostError(.notFound, "\(device) is not attached") }
        return try file.liveBackend().size
    }

    public func device(backingFile: String) throws -> String? {
        let matches = try attachments(backingFile: backingFile)
        return (matches.first { !$0.readOnly } ?? matches.first)?.device
    }

    public func device(backingFile: String, readOnly: Bool) throws -> String? {
        try attachments(backingFile: backingFile).first { $0.readOnly == readOnly }?.device
    }

    public func attachments() throws -> [LoopAttachment] {
        state.withLock { state in
            state.devices.sorted { $0.key < $1.key }.map { number, device in
                LoopAttachment(
                    device: Self.path(of: number), number: number, backingFile: device.file.path, readOnly: device.readOnly,
                    directIO: device.directIO, backingDevice: 0, backingInode: device.file.serial)
            }
        }
    }

    /// The devices over exactly the file served at `path` now: not those over an older file
    /// that was served at the same path (as a loop device is matched by inode).
    public func attachments(backingFile path: String) throws -> [LoopAttachment] {
        let current = table.file(at: path)
        return try attachments().filter { attachment in
            guard attachment.backingFile == path else { return false }
            guard let current else { return true }
            return attachment.backingInode == current.serial
        }
    }

    public func freeDeviceCount() throws -> Int { state.withLock { capacity - $0.devices.count } }

    private static func path(of number: Int) -> String { "/dev/fakeloop\(number)" }

    private static func number(of device: String) -> Int? {
        guard device.hasPrefix("/dev/fakeloop") else { return nil }
        return Int(device.dropFirst("/dev/fakeloop".count))
    }
}
