/// The open files of one layer: its sparse data file (cluster `c` at byte `c * clusterSize`)
/// and its allocation map.
final class LayerFiles: Sendable {
    let layerID: Int64
    let data: SystemFile
    let map: AllocationMapFile

    init(layerID: Int64, data: SystemFile, map: AllocationMapFile) {
        self.layerID = layerID
        self.data = data
        self.map = map
    }

    func close() {
        data.close()
        map.file.close()
    }
}

/// The folder of layer files. File names come only from internal layer numbers
/// (`layer-<16 hex digits>.data` / `.map`), never from a user-supplied name or id.
package struct LayerDirectory: Sendable {
    let path: String

    package enum FileKind: String, Sendable {
        case data
        case map
    }

    func dataPath(_ layerID: Int64) -> String { "\(path)/\(fileName(layerID, .data))" }
    func mapPath(_ layerID: Int64) -> String { "\(path)/\(fileName(layerID, .map))" }

    package func fileName(_ layerID: Int64, _ kind: FileKind) -> String {
        let hex = String(UInt64(bitPattern: layerID), radix: 16)
        return "layer-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + "." + kind.rawValue
    }

    /// Creates an empty layer (an empty sparse data file and a clean map) and makes both entries durable.
    func createLayer(_ layerID: Int64, clusterSize: UInt32) throws {
        let data = try SystemFile.open(dataPath(layerID), create: true, exclusive: true)
        data.close()
        let map = try AllocationMapFile.create(at: mapPath(layerID), layerID: layerID, clusterSize: clusterSize)
        map.file.close()
        try SystemDirectory.synchronize(path)
    }

    func openLayer(_ layerID: Int64, writable: Bool) throws -> LayerFiles {
        let data = try SystemFile.open(dataPath(layerID), readOnly: !writable)
        do {
            let mapFile = try SystemFile.open(mapPath(layerID), readOnly: !writable)
            do {
                let (map, _) = try AllocationMapFile.open(mapFile)
                return LayerFiles(layerID: layerID, data: data, map: map)
            } catch {
                mapFile.close()
                throw error
            }
        } catch {
            data.close()
            throw error
        }
    }

    func removeLayer(_ layerID: Int64) throws {
        try SystemDirectory.removeFile(dataPath(layerID))
        try SystemDirectory.removeFile(mapPath(layerID))
    }

    func layerExists(_ layerID: Int64) -> Bool {
        SystemDirectory.fileExists(dataPath(layerID)) && SystemDirectory.fileExists(mapPath(layerID))
    }

    /// Every entry of the folder: layer files by number, and names that are no layer file at all.
    func listFiles() throws -> (layers: [Int64: Set<FileKind>], others: [String]) {
        var layers: [Int64: Set<FileKind>] = [:]
        var others: [String] = []
        for name in try SystemDirectory.entries(of: path) {
            if let (layerID, kind) = parse(name) {
                layers[layerID, default: []].insert(kind)
            } else {
                others.append(name)
            }
        }
        return (layers, others)
    }

    package func parse(_ name: String) -> (Int64, FileKind)? {
        guard name.hasPrefix("layer-") else { return nil }
        let rest = name.dropFirst("layer-".count)
        // Exactly the names `fileName` makes: UInt64(_:radix:) alone also takes A–F and a leading
        // "+", which would give one layer a second, never-collected file name.
        guard let dot = rest.firstIndex(of: "."), rest.distance(from: rest.startIndex, to: dot) == 16,
            rest[..<dot].utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }),
            let kind = FileKind(rawValue: String(rest[rest.index(after: dot)...])),
            let number = UInt64(rest[..<dot], radix: 16)
        else { return nil }
        return (Int64(bitPattern: number), kind)
    }
}
