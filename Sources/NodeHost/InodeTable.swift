import CFuse3
import Synchronization

/// The exported files by inode number, read by every FUSE request without a lock: the kernel
/// names an open file by its handle, and a handle is the inode number, so that a successor
/// process serving the same connection understands the handles the kernel already holds
/// (a pointer would mean nothing in another process).
///
/// Slots hold retained references published atomically. A file taken out is not released at
/// once (a request on another thread may have just loaded it) but retired, and released when
/// the table is: files are few and small (their backend's resources are closed by the owner).
final class InodeTable: @unchecked Sendable {
    /// Inodes 2 ..< 2 + capacity (1 is the root directory).
    static let capacity = 4096
    static let firstInode: UInt64 = 2

    private let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let retired = Mutex<[Unmanaged<ExportedFile>]>([])

    init() {
        slots = .allocate(capacity: Self.capacity)
        slots.initialize(repeating: nil, count: Self.capacity)
    }

    deinit {
        for index in 0..<Self.capacity {
            if let raw = slots[index] { Unmanaged<ExportedFile>.fromOpaque(raw).release() }
        }
        slots.deallocate()
        for file in retired.withLock({ $0 }) { file.release() }
    }

    static func contains(inode: UInt64) -> Bool {
        inode >= firstInode && inode < firstInode + UInt64(capacity)
    }

    subscript(inode: UInt64) -> ExportedFile? {
        guard Self.contains(inode: inode) else { return nil }
        guard let raw = strata_load_pointer(slots + Int(inode - Self.firstInode)) else { return nil }
        return Unmanaged<ExportedFile>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Publishes `file` at its inode; the caller has checked the slot is free.
    func insert(_ file: ExportedFile) {
        let raw = Unmanaged.passRetained(file).toOpaque()
        if let previous = strata_exchange_pointer(slots + Int(file.inode - Self.firstInode), raw) {
            retired.withLock { $0.append(Unmanaged<ExportedFile>.fromOpaque(previous)) }
        }
    }

    func remove(inode: UInt64) {
        guard Self.contains(inode: inode) else { return }
        if let previous = strata_exchange_pointer(slots + Int(inode - Self.firstInode), nil) {
            retired.withLock { $0.append(Unmanaged<ExportedFile>.fromOpaque(previous)) }
        }
    }
}
