import BlockStore
import Glibc
import GRDB
import Logging

/// The `store` target: everything the store decodes from disk or from a caller's opaque token,
/// one decoder per input (its first byte chooses):
/// allocation-map headers and entries, layer file names, listing cursors, catalog rows and the
/// parameters JSON kept in a volume row. (`store.lock` is only ever flock'ed, never read.)
enum StoreMetadataHarness {
    static func run(_ input: inout FuzzInput) {
        switch input.byte() % 5 {
        case 0: checkAllocationMap(&input)
        case 1: checkLayerFileName(&input)
        case 2: checkCursor(&input)
        case 3: CatalogRowHarness.run(&input)
        default: checkParameters(&input)
        }
    }

    /// A store opened once per process, for the decoders that live on its parts.
    static let fixture: BlockStore = {
        let directory = Workspace.path + "/metadata-store"
        do {
            return try BlockStore(directory: directory, options: quietOptions)
        } catch {
            fatalError("cannot open the fixture store: \(error)")
        }
    }()

    static let quietOptions = StoreOptions(
        defaultClusterSize: 4096, backgroundFlatten: false, logger: Logger(label: "strata-fuzz") { _ in SwiftLogNoOpLogHandler() })

    // MARK: Allocation maps

    /// A map is read as exactly what its bytes say: the header only when magic, checksum and
    /// version hold, with its fields at their offsets (and it survives a rewrite); the entries in
    /// file order, every non-zero byte once, stopping with `.corrupt` at the first value that is
    /// no cluster state.
    static func checkAllocationMap(_ input: inout FuzzInput) {
        let fuzzed = FuzzedMapFile(&input, layerID: 7, clusterSize: 65536)
        let path = Workspace.path + "/map-under-test"
        unlink(path)
        let map: AllocationMapFile
        do {
            map = try AllocationMapFile.create(at: path, layerID: 7, clusterSize: 65536)
            try fuzzed.write(to: map.file)
        } catch {
            fatalError("cannot write the map under test: \(error)")
        }
        defer { map.file.close() }

        do {
            let header = try map.readHeader()
            check(fuzzed.isValidHeader, "accepted a header with magic \(fuzzed.magicMatches), checksum \(fuzzed.checksumMatches), version \(fuzzed.version)")
            check(header.formatVersion == fuzzed.version && header.dirty == fuzzed.dirty && header.clusterSize == fuzzed.clusterSize
                    && header.layerID == fuzzed.layerID,
                  "read \(header), the bytes say version \(fuzzed.version), dirty \(fuzzed.dirty), cluster size \(fuzzed.clusterSize), layer \(fuzzed.layerID)")
            var flipped = header
            flipped.dirty.toggle()
            try map.writeHeader(flipped)
            check(try map.readHeader() == flipped, "a rewritten header does not read back")
        } catch let error as StoreError {
            check(error.code == .corrupt, "a bad header gave \(error)")
            check(!fuzzed.isValidHeader, "refused a valid header: \(error)")
        } catch {
            check(false, "unexpected error \(error)")
        }

        var reported: [(cluster: Int, value: UInt32)] = []
        var failure: StoreError?
        do {
            let (reader, _) = try AllocationMapFile.open(map.file)
            try reader.forEachEntry { cluster, entry in reported.append((cluster, entry.packed)) }
        } catch let error as StoreError {
            failure = error
        } catch {
            check(false, "unexpected error \(error)")
        }
        guard fuzzed.isValidHeader else {
            check(failure?.code == .corrupt && reported.isEmpty, "a map with a bad header gave \(reported.count) entries and \(failure.map { "\($0)" } ?? "no error")")
            return
        }
        let entries = fuzzed.nonZeroEntries
        let firstBad = entries.firstIndex { !fuzzed.isValidEntry($0.value) }
        let expected = entries[..<(firstBad ?? entries.count)]
        check(reported.elementsEqual(expected, by: { $0 == $1 }),
              "reported \(reported.count) entries (first \(reported.first.map { "\($0)" } ?? "none")), the file holds \(expected.count) before any bad one")
        if let firstBad {
            check(failure?.code == .corrupt, "entry value \(entries[firstBad].value) at cluster \(entries[firstBad].cluster) gave \(failure.map { "\($0)" } ?? "no error")")
        } else {
            check(failure == nil, "a map of valid entries failed: \(failure!)")
        }
    }

    // MARK: Layer file names

    /// A name is taken for a layer file only if it is exactly the name the store gives that
    /// layer's file; and every name the store gives parses back to its layer.
    static func checkLayerFileName(_ input: inout FuzzInput) {
        let layers = fixture.layerDirectory
        let shape = input.byte()
        var name = shape & 1 != 0 ? "layer-" : ""
        name += input.string(limit: 40)
        if shape & 2 != 0 { name += shape & 4 != 0 ? ".map" : ".data" }
        if let (layerID, kind) = layers.parse(name) {
            check(layers.fileName(layerID, kind) == name, "\(name.debugDescription) parsed as layer \(layerID) \(kind), whose file is \(layers.fileName(layerID, kind))")
        }
        let layerID = input.integer(Int64.self)
        for kind in [LayerDirectory.FileKind.data, .map] {
            let canonical = layers.fileName(layerID, kind)
            let parsed = layers.parse(canonical)
            check(parsed?.0 == layerID && parsed?.1 == kind, "\(canonical) does not parse back to layer \(layerID) \(kind)")
        }
    }

    // MARK: Cursors

    /// A cursor is a decimal sequence number: accepted exactly when it is one (nothing but 1–19
    /// ASCII digits, in range), and every number the store hands out is accepted back.
    static func checkCursor(_ input: inout FuzzInput) {
        let cursor = input.string(limit: 48)
        let bytes = Array(cursor.utf8)
        let isNumber = !bytes.isEmpty && bytes.count <= 19 && bytes.allSatisfy { $0 >= 48 && $0 <= 57 } && Int64(cursor) != nil
        do {
            let value = try BlockStore.parseCursor(cursor)
            check(cursor.isEmpty ? value == 0 : isNumber && value == Int64(cursor)!, "cursor \(cursor.debugDescription) read as \(value)")
            check(value >= 0, "cursor \(cursor.debugDescription) read as \(value)")
        } catch let error as StoreError {
            check(error.code == .invalidArgument, "cursor \(cursor.debugDescription) gave \(error)")
            check(!isNumber && !cursor.isEmpty, "refused cursor \(cursor.debugDescription)")
        } catch {
            check(false, "unexpected error \(error)")
        }
        let issued = input.integer(Int64.self) & Int64.max
        check((try? BlockStore.parseCursor(String(issued))) == issued, "cursor \(issued) does not read back")
    }

    // MARK: Volume parameters

    /// The parameters column is JSON the store wrote; whatever it holds decodes to something
    /// (an unreadable value is no parameters), and what decodes survives a rewrite.
    static func checkParameters(_ input: inout FuzzInput) {
        let text = String(decoding: input.rest(), as: UTF8.self)
        let decoded = VolumeRow.decodeParameters(text)
        let again = VolumeRow.decodeParameters(VolumeRow.encodeParameters(decoded))
        check(again == decoded, "parameters \(decoded) do not survive a rewrite (got \(again))")
    }
}
