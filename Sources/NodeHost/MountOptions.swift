import Glibc

/// mount(8)-style option words split into mount(2) flags and the filesystem's data string.
enum MountOptions {
    /// Words that are flags: the flag to set, or (for "rw", "suid"…) to clear.
    private static let flagWords: [String: (set: UInt, clear: UInt)] = [
        "ro": (UInt(MS_RDONLY), 0), "rw": (0, UInt(MS_RDONLY)),
        "nosuid": (UInt(MS_NOSUID), 0), "suid": (0, UInt(MS_NOSUID)),
        "nodev": (UInt(MS_NODEV), 0), "dev": (0, UInt(MS_NODEV)),
        "noexec": (UInt(MS_NOEXEC), 0), "exec": (0, UInt(MS_NOEXEC)),
        "sync": (UInt(MS_SYNCHRONOUS), 0), "async": (0, UInt(MS_SYNCHRONOUS)),
        "dirsync": (UInt(MS_DIRSYNC), 0),
        "noatime": (UInt(MS_NOATIME), 0), "atime": (0, UInt(MS_NOATIME)),
        "nodiratime": (UInt(MS_NODIRATIME), 0), "diratime": (0, UInt(MS_NODIRATIME)),
        "relatime": (UInt(MS_RELATIME), 0), "norelatime": (0, UInt(MS_RELATIME)),
        "strictatime": (UInt(MS_STRICTATIME), 0),
        "lazytime": (UInt(MS_LAZYTIME), 0), "nolazytime": (0, UInt(MS_LAZYTIME)),
        "defaults": (0, 0),
    ]

    /// Splits `words`; words that are not flags go to the filesystem, comma-joined.
    static func parse(_ words: [String]) throws -> (flags: UInt, data: String) {
        var flags: UInt = 0
        var data: [String] = []
        for word in words.flatMap({ $0.split(separator: ",").map(String.init) }) where !word.isEmpty {
            guard !word.contains(where: { $0 == "\0" || $0.isNewline }) else {
                throw NodeHostError(.invalidArgument, "mount option \(word.debugDescription) is malformed")
            }
            if word == "bind" || word == "rbind" || word == "remount" {
                throw NodeHostError(.invalidArgument, "mount option \(word) is not accepted here")
            }
            if let flag = flagWords[word] {
                flags = (flags & ~flag.clear) | flag.set
            } else {
                data.append(word)
            }
        }
        return (flags, data.joined(separator: ","))
    }

    /// The per-mount flags now in force at `path` (from statvfs), to carry over a remount.
    static func flags(of path: String) throws -> UInt {
        let status = try Syscall.filesystemStatus(of: path)
        // ST_* values from <sys/statvfs.h>, mapped to their MS_* twins.
        let pairs: [(UInt, UInt)] = [
            (2, UInt(MS_NOSUID)), (4, UInt(MS_NODEV)), (8, UInt(MS_NOEXEC)), (16, UInt(MS_SYNCHRONOUS)),
            (1024, UInt(MS_NOATIME)), (2048, UInt(MS_NODIRATIME)), (4096, UInt(MS_RELATIME)),
        ]
        return pairs.reduce(0) { status.f_flag & $1.0 != 0 ? $0 | $1.1 : $0 }
    }
}
