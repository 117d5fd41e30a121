/// What the keeper holds for one staged volume: a duplicate of the /dev/fuse descriptor serving
/// it, and what proves the descriptor belongs to that volume's export: the volume id, the inode
/// it is exported under and a random cookie recorded in the node's registry when it was staged.
/// A successor serves a descriptor only when all three match its registry.
public struct KeeperEntry: Sendable, Equatable {
    public var volumeID: String
    public var inode: UInt64
    public var cookie: String
    /// The connection's FUSE_INIT parameters, which a successor must replay.
    public var protocolMinor: UInt32
    public var maxReadahead: UInt32

    public init(volumeID: String, inode: UInt64, cookie: String, protocolMinor: UInt32, maxReadahead: UInt32) {
        self.volumeID = volumeID
        self.inode = inode
        self.cookie = cookie
        self.protocolMinor = protocolMinor
        self.maxReadahead = maxReadahead
    }

    /// Space-separated fields; the volume id is hexadecimal UTF-8 so that any id survives.
    public var wireFields: [String] { fields }

    var fields: [String] {
        [Self.hex(volumeID), String(inode), cookie, String(protocolMinor), String(maxReadahead)]
    }

    public init?(wireFields fields: ArraySlice<String>) {
        let fields = Array(fields)
        guard fields.count == 5, let volumeID = Self.unhex(fields[0]), let inode = UInt64(fields[1]),
              Self.isCookie(fields[2]), let minor = UInt32(fields[3]), let readahead = UInt32(fields[4])
        else { return nil }
        self.init(volumeID: volumeID, inode: inode, cookie: fields[2], protocolMinor: minor, maxReadahead: readahead)
    }

    /// A cookie is 32 lowercase hexadecimal digits (128 random bits).
    public static func isCookie(_ text: String) -> Bool {
        text.utf8.count == 32 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    public static func hex(_ text: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in text.utf8 {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func unhex(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count % 2 == 0, bytes.count <= 2048 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case 0x30...0x39: return digit - 0x30
            case 0x61...0x66: return digit - 0x61 + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            guard let high = value(bytes[index]), let low = value(bytes[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return String(validating: out, as: UTF8.self)
    }
}
