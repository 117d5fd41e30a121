/// What a layer holds for one cluster.
package enum ClusterState: UInt8, Sendable {
    /// Nothing here: look further down the chain.
    case unallocated = 0
    /// The layer's data file holds the cluster.
    case data = 1
    /// The cluster was discarded: it reads as zeros and hides whatever lies below.
    case zero = 2
    /// The layer holds some subclusters (named by the entry's mask); the rest lie below.
    case partial = 3
}

/// One map entry: the state, and for `.partial` which subclusters the layer holds (bit i for
/// subcluster i, never empty).
package struct MapEntry: Sendable, Equatable {
    package var state: ClusterState
    package var subclusterMask: UInt16

    package init(_ state: ClusterState, subclusterMask: UInt16 = 0) {
        self.state = state
        self.subclusterMask = subclusterMask
    }

    /// Format 2 packs an entry in a little-endian UInt32: state in bits 0–7, bits 8–15 zero,
    /// mask in bits 16–31.
    package var packed: UInt32 { UInt32(state.rawValue) | UInt32(subclusterMask) << 16 }

    package init?(packed: UInt32) {
        guard packed & 0xFF00 == 0, let state = ClusterState(rawValue: UInt8(packed & 0xFF)) else { return nil }
        let mask = UInt16(packed >> 16)
        guard (state == .partial) == (mask != 0) else { return nil }
        self.init(state, subclusterMask: mask)
    }
}

/// The on-disk allocation map of one layer: a 4 KiB header (magic, format version, clean/dirty
/// flag, cluster size, layer number, checksum) followed by one entry per cluster.
///
/// Format 2 entries are 4 bytes (state and subcluster mask together, so a torn write cannot
/// pair a new state with an old mask: a 4-byte aligned entry never spans two sectors); format 1
/// maps, one state byte per cluster and no partial clusters, are still read, and a format 1
/// head is written in format 1 with whole-cluster copy-up.
///
/// The file is sparse: entries are written page by page as clusters get allocated, so the map of
/// an unwritten layer costs one header block whatever the volume size. Entries are only ever
/// written after the data they describe is durable, so any mix of old and new entries on disk
/// describes durable data.
package struct AllocationMapFile: Sendable {
    package static let headerSize: UInt64 = 4096
    package static let magic: [UInt8] = Array("STRATAMP".utf8)
    /// The version new maps are written in.
    package static let formatVersion: UInt32 = 2
    package static let supportedVersions: ClosedRange<UInt32> = 1...2
    /// Entries per page; also the number of clusters in one chunk of the in-memory index.
    static let entriesPerPage = 4096

    package struct Header: Sendable, Equatable {
        package var formatVersion: UInt32
        package var dirty: Bool
        package var clusterSize: UInt32
        package var layerID: Int64
        /// The boot the map was marked dirty in (see `BootIdentity`); nil in maps written before
        /// it was recorded, and in clean maps.
        package var dirtyBootID: BootIdentity? = nil
    }

    package let file: SystemFile
    /// Bytes per entry: 1 in format 1, 4 in format 2.
    package let entrySize: Int

    package init(file: SystemFile, formatVersion: UInt32) {
        self.file = file
        entrySize = formatVersion >= 2 ? 4 : 1
    }

    /// Opens a map and reads its header (which must be valid).
    package static func open(_ file: SystemFile) throws -> (AllocationMapFile, Header) {
        let header = try readHeader(of: file)
        return (AllocationMapFile(file: file, formatVersion: header.formatVersion), header)
    }

    /// Writes a new, clean map in the current format and makes it durable.
    package static func create(at path: String, layerID: Int64, clusterSize: UInt32) throws -> AllocationMapFile {
        let file = try SystemFile.open(path, create: true, exclusive: true)
        let map = AllocationMapFile(file: file, formatVersion: formatVersion)
        do {
            try map.writeHeader(Header(formatVersion: formatVersion, dirty: false, clusterSize: clusterSize, layerID: layerID))
        } catch {
            file.close()
            throw error
        }
        return map
    }

    package var supportsPartialClusters: Bool { entrySize == 4 }

    package func readHeader() throws -> Header { try Self.readHeader(of: file) }

    private static func readHeader(of file: SystemFile) throws -> Header {
        var bytes = [UInt8](repeating: 0, count: 64)
        try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        guard Array(bytes[0..<8]) == Self.magic else { throw StoreError(.corrupt, "allocation map has a bad magic") }
        guard Self.checksum(bytes[0..<32]) == Self.load(UInt64.self, bytes, 32) else {
            throw StoreError(.corrupt, "allocation map header checksum mismatch")
        }
        let version = Self.load(UInt32.self, bytes, 8)
        guard supportedVersions.contains(version) else {
            throw StoreError(.corrupt, "allocation map format version \(version) is not supported")
        }
        return Header(
            formatVersion: version,
            dirty: Self.load(UInt32.self, bytes, 12) & 1 != 0,
            clusterSize: Self.load(UInt32.self, bytes, 16),
            layerID: Int64(bitPattern: Self.load(UInt64.self, bytes, 24)),
            // Bytes 40..<56 with their own checksum at 56, which older readers never look at.
            dirtyBootID: Self.checksum(bytes[0..<56]) == Self.load(UInt64.self, bytes, 56)
                ? BootIdentity(bytes: Array(bytes[40..<56])) : nil
        )
    }

    /// Rewrites the header and makes it durable. The header fits in one sector, so it is never
    /// torn. The format version must stay the one the entries are written in.
    package func writeHeader(_ header: Header) throws {
        var bytes = [UInt8](repeating: 0, count: 64)
        bytes.replaceSubrange(0..<8, with: Self.magic)
        Self.store(header.formatVersion, &bytes, 8)
        Self.store(UInt32(header.dirty ? 1 : 0), &bytes, 12)
        Self.store(header.clusterSize, &bytes, 16)
        Self.store(UInt64(bitPattern: header.layerID), &bytes, 24)
        Self.store(Self.checksum(bytes[0..<32]), &bytes, 32)
        if header.dirty, let boot = header.dirtyBootID {
            bytes.replaceSubrange(40..<56, with: boot.bytes)
            Self.store(Self.checksum(bytes[0..<56]), &bytes, 56)
        }
        try bytes.withUnsafeBytes { try file.write($0, at: 0) }
        try file.synchronizeData()
    }

    /// Marks the map dirty (recording the boot it happens in) or clean.
    func setDirty(_ dirty: Bool, boot: BootIdentity? = BootIdentity.current) throws {
        var header = try readHeader()
        header.dirty = dirty
        header.dirtyBootID = dirty ? boot : nil
        try writeHeader(header)
    }

    /// Writes one entry in place (recovery adopting data a crash left unmapped); not durable
    /// until the file is synchronised.
    func writeEntry(_ entry: MapEntry, cluster: Int) throws {
        let offset = Self.headerSize + UInt64(cluster) * UInt64(entrySize)
        if entrySize == 1 {
            try [entry.state.rawValue].withUnsafeBytes { try file.write($0, at: offset) }
        } else {
            var packed = entry.packed.littleEndian
            try withUnsafeBytes(of: &packed) { try file.write($0, at: offset) }
        }
    }

    /// Calls `body` with every cluster whose entry is not `.unallocated`, skipping holes of the
    /// file. An entry that is no valid state is `.corrupt`.
    package func forEachEntry(_ body: (_ cluster: Int, _ entry: MapEntry) throws -> Void) throws {
        let fileSize = try file.size()
        let entrySize = UInt64(self.entrySize)
        var offset = Self.headerSize
        let bufferSize = 1 << 16
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while offset < fileSize, let dataStart = file.nextData(from: offset) {
            let dataEnd = min(file.nextHole(from: dataStart), fileSize)
            // Whole entries only: data extents start and end on block boundaries, a multiple of 4.
            var position = Self.headerSize + (max(dataStart, Self.headerSize) - Self.headerSize) / entrySize * entrySize
            while position + entrySize <= dataEnd {
                let count = Int(min(UInt64(bufferSize), (dataEnd - position) / entrySize * entrySize))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try file.read(into: slice, at: position)
                let firstCluster = Int((position - Self.headerSize) / entrySize)
                if entrySize == 1 {
                    for index in 0..<count where slice[index] != 0 {
                        guard let state = ClusterState(rawValue: slice[index]), state != .partial else {
                            throw StoreError(.corrupt, "allocation map entry \(firstCluster + index) has value \(slice[index])")
                        }
                        try body(firstCluster + index, MapEntry(state))
                    }
                } else {
                    for index in 0..<count / 4 {
                        let packed = UInt32(littleEndian: slice.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
                        guard packed != 0 else { continue }
                        guard let entry = MapEntry(packed: packed) else {
                            throw StoreError(.corrupt, "allocation map entry \(firstCluster + index) has value 0x\(String(packed, radix: 16))")
                        }
                        try body(firstCluster + index, entry)
                    }
                }
                position += UInt64(count)
            }
            offset = max(dataEnd, dataStart + 1)
        }
    }

    /// Bytes of one page of entries.
    var pageBytes: Int { Self.entriesPerPage * entrySize }

    /// Fills a page buffer (`pageBytes` long) from the page's entries, in this map's format.
    func encodePage(_ entries: (Int) -> MapEntry, into page: UnsafeMutableRawBufferPointer) {
        page.initializeMemory(as: UInt8.self, repeating: 0)
        for slot in 0..<Self.entriesPerPage {
            let entry = entries(slot)
            guard entry.state != .unallocated else { continue }
            if entrySize == 1 {
                page[slot] = entry.state.rawValue
            } else {
                page.storeBytes(of: entry.packed.littleEndian, toByteOffset: slot * 4, as: UInt32.self)
            }
        }
    }

    /// Writes the entries of one page (`entriesPerPage` clusters starting at `page * entriesPerPage`).
    func writePage(_ page: Int, entries: UnsafeRawBufferPointer) throws {
        try file.write(entries, at: Self.headerSize + UInt64(page) * UInt64(pageBytes))
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
