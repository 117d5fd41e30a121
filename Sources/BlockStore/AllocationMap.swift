/// What a layer holds for one cluster.
package enum ClusterState: UInt8, Sendable {
    /// Nothing here: look further down the chain.
    case unallocated = 0
    /// The layer's data file holds the cluster.
    case data = 1
    /// The cluster was discarded: it reads as zeros and hides whatever lies below.
    case zero = 2
}

/// The on-disk allocation map of one layer: a 4 KiB header (magic, format version, clean/dirty
/// flag, cluster size, layer number, checksum) followed by one byte per cluster.
///
/// The file is sparse: entries are written page by page as clusters get allocated, so the map of
/// an unwritten layer costs one header block whatever the volume size. One byte per entry means a
/// torn page write can never split an entry. Entries are only ever written after the data they
/// describe is durable, so any mix of old and new entries on disk describes durable data.
package struct AllocationMapFile: Sendable {
    package static let headerSize: UInt64 = 4096
    package static let magic: [UInt8] = Array("STRATAMP".utf8)
    package static let formatVersion: UInt32 = 1
    /// Entries per page; also the number of clusters in one chunk of the in-memory index.
    static let entriesPerPage = 4096

    package struct Header: Sendable, Equatable {
        package var formatVersion: UInt32
        package var dirty: Bool
        package var clusterSize: UInt32
        package var layerID: Int64
    }

    package let file: SystemFile

    /// Writes a new, clean map and makes it durable.
    package static func create(at path: String, layerID: Int64, clusterSize: UInt32) throws -> AllocationMapFile {
        let file = try SystemFile.open(path, create: true, exclusive: true)
        let map = AllocationMapFile(file: file)
        do {
            try map.writeHeader(Header(formatVersion: formatVersion, dirty: false, clusterSize: clusterSize, layerID: layerID))
        } catch {
            file.close()
            throw error
        }
        return map
    }

    package func readHeader() throws -> Header {
        var bytes = [UInt8](repeating: 0, count: 40)
        try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        guard Array(bytes[0..<8]) == Self.magic else { throw StoreError(.corrupt, "allocation map has a bad magic") }
        guard Self.checksum(bytes[0..<32]) == Self.load(UInt64.self, bytes, 32) else {
            throw StoreError(.corrupt, "allocation map header checksum mismatch")
        }
        let version = Self.load(UInt32.self, bytes, 8)
        guard version == Self.formatVersion else { throw StoreError(.corrupt, "allocation map format version \(version) is not supported") }
        return Header(
            formatVersion: version,
            dirty: Self.load(UInt32.self, bytes, 12) & 1 != 0,
            clusterSize: Self.load(UInt32.self, bytes, 16),
            layerID: Int64(bitPattern: Self.load(UInt64.self, bytes, 24))
        )
    }

    /// Rewrites the header and makes it durable. The header fits in one sector, so it is never torn.
    package func writeHeader(_ header: Header) throws {
        var bytes = [UInt8](repeating: 0, count: 40)
        bytes.replaceSubrange(0..<8, with: Self.magic)
        Self.store(header.formatVersion, &bytes, 8)
        Self.store(UInt32(header.dirty ? 1 : 0), &bytes, 12)
        Self.store(header.clusterSize, &bytes, 16)
        Self.store(UInt64(bitPattern: header.layerID), &bytes, 24)
        Self.store(Self.checksum(bytes[0..<32]), &bytes, 32)
        try bytes.withUnsafeBytes { try file.write($0, at: 0) }
        try file.synchronizeData()
    }

    func setDirty(_ dirty: Bool) throws {
        var header = try readHeader()
        header.dirty = dirty
        try writeHeader(header)
    }

    /// Calls `body` with every cluster whose entry is not `.unallocated`, skipping holes of the file.
    package func forEachEntry(_ body: (_ cluster: Int, _ state: ClusterState) throws -> Void) throws {
        let fileSize = try file.size()
        var offset = Self.headerSize
        let bufferSize = 1 << 16
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while offset < fileSize, let dataStart = file.nextData(from: offset) {
            let dataEnd = min(file.nextHole(from: dataStart), fileSize)
            var position = max(dataStart, Self.headerSize)
            while position < dataEnd {
                let count = Int(min(UInt64(bufferSize), dataEnd - position))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try file.read(into: slice, at: position)
                let firstCluster = Int(position - Self.headerSize)
                for index in 0..<count where slice[index] != 0 {
                    guard let state = ClusterState(rawValue: slice[index]) else {
                        throw StoreError(.corrupt, "allocation map entry \(firstCluster + index) has value \(slice[index])")
                    }
                    try body(firstCluster + index, state)
                }
                position += UInt64(count)
            }
            offset = dataEnd
        }
    }

    /// Writes the entries of one page (`entriesPerPage` clusters starting at `page * entriesPerPage`).
    func writePage(_ page: Int, entries: UnsafeRawBufferPointer) throws {
        try file.write(entries, at: Self.headerSize + UInt64(page) * UInt64(Self.entriesPerPage))
    }

    /// Writes one entry (used by recovery and flatten outside the paged index).
    func writeEntry(_ cluster: Int, _ state: ClusterState) throws {
        var value = state.rawValue
        try withUnsafeBytes(of: &value) { try file.write($0, at: Self.headerSize + UInt64(cluster)) }
    }

    private static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    private static func load<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], _ offset: Int) -> T {
        var value: T = 0
        for index in (0..<MemoryLayout<T>.size).reversed() {
            value = (value << 8) | T(bytes[offset + index])
        }
        return value
    }

    private static func store<T: FixedWidthInteger>(_ value: T, _ bytes: inout [UInt8], _ offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }
}
