import FuseKeeperProtocol
@preconcurrency import Glibc

/// Holds /dev/fuse descriptors for the node plugin, so that its FUSE connection, and every loop
/// device, filesystem and pod on it, outlives the plugin's process, container and pod. It knows
/// nothing of volumes beyond the identity the plugin records with each descriptor.
///
/// One thread, one request at a time: requests are rare (a stage, an unstage, a restart).
/// Only root may talk to it: whoever holds these descriptors can read and write every volume.
final class Keeper {
    private var held: [String: (entry: KeeperEntry, descriptor: Int32)] = [:]
    private let listener: Int32

    init(listener: Int32) {
        self.listener = listener
    }

    func run() -> Never {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno != EINTR { log("accept failed: \(String(cString: strerror(errno)))") }
                continue
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            serve(client)
            close(client)
        }
    }

    private func serve(_ client: Int32) {
        guard KeeperSocket.peerUserID(client) == 0 else {
            log("refused a client that is not root (uid \(KeeperSocket.peerUserID(client).map(String.init) ?? "unknown"))")
            return
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        do {
            guard let (words, descriptor) = try KeeperSocket.receive(client) else { return }
            try answer(client, words, descriptor)
        } catch {
            log("request failed: \(error)")
        }
    }

    private func answer(_ client: Int32, _ words: [String], _ descriptor: Int32?) throws {
        switch (words.first, descriptor) {
        case ("HOLD", let descriptor?):
            guard let entry = KeeperEntry(wireFields: words.dropFirst()), isFuseDevice(descriptor) else {
                close(descriptor)
                return try KeeperSocket.send(client, ["ERR", "malformed", "HOLD", "or", "not", "a", "/dev/fuse", "descriptor"])
            }
            if let previous = held[entry.volumeID] { close(previous.descriptor) }
            held[entry.volumeID] = (entry, descriptor)
            log("holding the FUSE descriptor of volume \(entry.volumeID) (inode \(entry.inode)); \(held.count) held")
            try KeeperSocket.send(client, ["OK"])
        case ("DROP", nil):
            guard words.count == 2, let volumeID = KeeperEntry.unhex(words[1]) else {
                return try KeeperSocket.send(client, ["ERR", "malformed", "DROP"])
            }
            if let previous = held.removeValue(forKey: volumeID) {
                close(previous.descriptor)
                log("dropped the FUSE descriptor of volume \(volumeID); \(held.count) held")
            }
            try KeeperSocket.send(client, ["OK"])
        case ("LIST", nil):
            for (_, item) in held.sorted(by: { $0.key < $1.key }) {
                try KeeperSocket.send(client, ["ENTRY"] + fields(item.entry), passing: item.descriptor)
            }
            try KeeperSocket.send(client, ["END"])
            log("handed \(held.count) FUSE descriptor(s) to a driver")
        default:
            if let descriptor { close(descriptor) }
            try KeeperSocket.send(client, ["ERR", "unknown", "request"])
        }
    }

    /// The wire fields of an entry (the protocol module's own encoding).
    private func fields(_ entry: KeeperEntry) -> [String] { entry.wireFields }

    /// Only /dev/fuse descriptors are worth holding (character device 10:229).
    private func isFuseDevice(_ descriptor: Int32) -> Bool {
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFCHR else { return false }
        let device = UInt64(info.st_rdev)
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        return major == 10 && minor == 229
    }
}

func log(_ message: String) {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var parts = tm()
    var seconds = now.tv_sec
    gmtime_r(&seconds, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let stamp = "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    fputs("\(stamp) strata-fuse-keeper: \(message)\n", stderr)
}
