/// Turns a file into a kernel block device and back. The loop driver is today's
/// implementation (`LoopAttacher`); NBD or ublk can come later behind the same protocol.
///
/// Every operation is idempotent: attaching an attached file returns its device, detaching a
/// free device succeeds.
public protocol Attacher: Sendable {
    /// Attaches `file` and returns the device path (such as /dev/loop3). If the same file is
    /// already attached, returns that device.
    func attach(file: String, readOnly: Bool, directIO: Bool) throws -> String
    /// Detaches `device`. Returns true when the device is free now, false when the kernel will
    /// free it on last close (it is still mounted or open somewhere).
    @discardableResult
    func detach(device: String) throws -> Bool
    /// Detaches the device of `attachment` only while it still serves that same backing file
    /// (its number may have been freed and given to another file since it was listed).
    @discardableResult
    func detach(_ attachment: LoopAttachment) throws -> Bool
    /// Makes the device take the backing file's current size (after an online expansion);
    /// returns the device's size in bytes.
    @discardableResult
    func refreshSize(device: String) throws -> UInt64
    /// The device serving exactly this file (same inode, not an older file at the same path),
    /// or nil.
    func device(backingFile: String) throws -> String?
    /// The read-only or the writable device serving exactly this file, or nil.
    func device(backingFile: String, readOnly: Bool) throws -> String?
    /// Every device attached now.
    func attachments() throws -> [LoopAttachment]
    /// The devices serving exactly this file.
    func attachments(backingFile file: String) throws -> [LoopAttachment]
    /// How many devices are ready to attach without creating new ones.
    func freeDeviceCount() throws -> Int
}

/// A loop device as sysfs and LOOP_GET_STATUS64 describe it.
public struct LoopAttachment: Equatable, Sendable {
    /// /dev/loopN
    public var device: String
    public var number: Int
    /// The path the kernel shows for the backing file (it may no longer lead to that file).
    public var backingFile: String
    public var readOnly: Bool
    public var directIO: Bool
    /// The backing file's device and inode numbers, when the device node could be queried.
    public var backingDevice: UInt64?
    public var backingInode: UInt64?

    /// Public so that other `Attacher` implementations (NBD, ublk, the tests' in-memory one)
    /// can describe their devices.
    public init(device: String, number: Int, backingFile: String, readOnly: Bool, directIO: Bool,
                backingDevice: UInt64? = nil, backingInode: UInt64? = nil) {
        self.device = device
        self.number = number
        self.backingFile = backingFile
        self.readOnly = readOnly
        self.directIO = directIO
        self.backingDevice = backingDevice
        self.backingInode = backingInode
    }
}
