import BlockStore
import Glibc

/// An allocation-map file described by fuzz bytes: a 40-byte header and up to three runs of
/// entry bytes at chosen places past the 4 KiB header block, with holes between them.
///
/// Flag bits let the fuzzer get past the checks it cannot guess (a 64-bit checksum): 1 sets the
/// magic, 2 the format version (the current one, or format 1 with bit 0x40), 8 the layer number
/// and cluster size the caller expects, 4 then makes the checksum right. The harness computes the checksum itself (FNV-1a over bytes 0..<32),
/// independently of the store's code.
struct FuzzedMapFile {
    static let headerBlock: UInt64 = 4096

    var header: [UInt8]
    var runs: [(offset: UInt64, bytes: [UInt8])] = []

    init(_ input: inout FuzzInput, layerID: Int64 = 0, clusterSize: UInt32 = 0) {
        let flags = input.byte()
        header = input.bytes(exactly: 40)
        if flags & 1 != 0 { header.replaceSubrange(0..<8, with: AllocationMapFile.magic) }
        if flags & 2 != 0 { Self.store(flags & 0x40 != 0 ? 1 : AllocationMapFile.formatVersion, into: &header, at: 8) }
        if flags & 8 != 0 {
            Self.store(clusterSize, into: &header, at: 16)
            Self.store(UInt64(bitPattern: layerID), into: &header, at: 24)
        }
        if flags & 4 != 0 { Self.store(Self.checksum(header[0..<32]), into: &header, at: 32) }
        var offset = Self.headerBlock
        for _ in 0..<Int(flags >> 4) % 4 {
            offset += UInt64(input.byte() % 32) * 4096 + UInt64(input.byte())
            let pattern = input.chunk(limit: 64)
            // Long runs (past the store's 64 KiB read buffer) from a short input: a repeated pattern.
            let length = input.bool() ? Int(input.integer(UInt16.self)) + (input.bool() ? 65536 : 0) : pattern.count
            let bytes = pattern.isEmpty ? [UInt8](repeating: 0, count: length) : (0..<length).map { pattern[$0 % pattern.count] }
            runs.append((offset, bytes))
            offset += UInt64(length)
        }
    }

    /// Header fields as the format defines them (little-endian at fixed offsets).
    var magicMatches: Bool { Array(header[0..<8]) == AllocationMapFile.magic }
    var checksumMatches: Bool { Self.checksum(header[0..<32]) == Self.load(UInt64.self, header, 32) }
    var version: UInt32 { Self.load(UInt32.self, header, 8) }
    var dirty: Bool { Self.load(UInt32.self, header, 12) & 1 != 0 }
    var clusterSize: UInt32 { Self.load(UInt32.self, header, 16) }
    var layerID: Int64 { Int64(bitPattern: Self.load(UInt64.self, header, 24)) }
    var isValidHeader: Bool { magicMatches && checksumMatches && (version == 1 || version == 2) }

    /// Every non-zero entry in file order, as the format defines it: format 1 one byte per
    /// cluster, format 2 a little-endian UInt32 per cluster (a trailing incomplete one is not an
    /// entry). Values are the byte, or the word.
    var nonZeroEntries: [(cluster: Int, value: UInt32)] {
        // An empty run writes nothing, so it does not make the file longer.
        let fileEnd = runs.filter { !$0.bytes.isEmpty }.reduce(UInt64(header.count)) { max($0, $1.offset + UInt64($1.bytes.count)) }
        guard fileEnd > Self.headerBlock else { return [] }
        var image = [UInt8](repeating: 0, count: Int(fileEnd - Self.headerBlock))
        for run in runs where !run.bytes.isEmpty {
            image.replaceSubrange(Int(run.offset - Self.headerBlock)..<Int(run.offset - Self.headerBlock) + run.bytes.count, with: run.bytes)
        }
        let entrySize = version == 1 ? 1 : 4
        return stride(from: 0, to: image.count / entrySize * entrySize, by: entrySize).compactMap { start in
            let value = (0..<entrySize).reduce(UInt32(0)) { $0 | UInt32(image[start + $1]) << (8 * $1) }
            return value == 0 ? nil : (start / entrySize, value)
        }
    }

    /// Whether an entry value is one the format allows: format 1 states data (1) and zero (2);
    /// format 2 a state up to partial (3) in the low byte, a zero second byte, and a subcluster
    /// mask in the high half exactly when the state is partial.
    func isValidEntry(_ value: UInt32) -> Bool {
        if version == 1 { return value == 1 || value == 2 }
        let state = value & 0xFF
        let mask = value >> 16
        return value & 0xFF00 == 0 && state <= 3 && (state == 3) == (mask != 0)
    }

    /// Writes the header and the runs over `file` (whose first 40 bytes it replaces).
    func write(to file: SystemFile) throws {
        try header.withUnsafeBytes { try file.write($0, at: 0) }
        for run in runs where !run.bytes.isEmpty {
            try run.bytes.withUnsafeBytes { try file.write($0, at: run.offset) }
        }
    }

    /// Replaces the file at `path` with this map (used on a store directory, outside the store).
    func write(toPath path: String) {
        unlink(path)
        let descriptor = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        check(descriptor >= 0, "cannot create \(path)")
        defer { close(descriptor) }
        func put(_ bytes: [UInt8], at offset: UInt64) {
            let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
            check(written == bytes.count, "short write to \(path)")
        }
        put(header, at: 0)
        for run in runs where !run.bytes.isEmpty { put(run.bytes, at: run.offset) }
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }

    static func load<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], _ offset: Int) -> T {
        (0..<MemoryLayout<T>.size).reduce(T(0)) { $0 | T(bytes[offset + $1]) << (8 * $1) }
    }

    static func store<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }
}
