import Foundation

/// Carves typed values out of libFuzzer's bytes. Reading past the end yields zeros, so every
/// input, however short, describes one complete case.
struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var isExhausted: Bool { position >= bytes.count }

    mutating func byte() -> UInt8 {
        defer { position += 1 }
        return position < bytes.count ? bytes[position] : 0
    }

    mutating func bool() -> Bool { byte() & 1 != 0 }

    /// Little-endian, like the store's on-disk integers.
    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(truncatingIfNeeded: byte()) << (8 * index)
        }
        return value
    }

    /// Exactly `count` bytes, zero-padded past the end.
    mutating func bytes(exactly count: Int) -> [UInt8] {
        (0..<count).map { _ in byte() }
    }

    /// A length byte (below `limit`), then that many bytes.
    mutating func chunk(limit: Int = 256) -> [UInt8] {
        let count = Int(byte()) % limit
        let end = min(bytes.count, position + count)
        defer { position = max(position, end) }
        return position < end ? Array(bytes[position..<end]) : []
    }

    /// A short string: invalid UTF-8 becomes U+FFFD, as the wire decoder would refuse it anyway.
    mutating func string(limit: Int = 256) -> String {
        String(decoding: chunk(limit: limit), as: UTF8.self)
    }

    /// Everything not read yet.
    mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return position < bytes.count ? Array(bytes[position...]) : []
    }
}

/// Stops the run with the broken invariant: libFuzzer records the input as a crash.
func check(
    _ condition: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    let holds: Bool
    do {
        holds = try condition()
    } catch {
        fatalError("invariant check threw \(error): \(message())", file: file, line: line)
    }
    if !holds { fatalError("invariant violated: \(message())", file: file, line: line) }
}

/// Scratch files of the harnesses, under $TMPDIR (scripts/fuzz.sh points it at a directory it
/// removes afterwards), one directory per process.
enum Workspace {
    static let path: String = {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/strata-fuzz-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            fatalError("cannot create a scratch directory under \(base)")
        }
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// Removes a directory tree (the harnesses' own scratch files only).
    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}
