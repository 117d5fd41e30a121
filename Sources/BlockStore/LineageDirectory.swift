import Glibc

/// What a flatten must keep so that changed-block listings stay exact across it.
///
/// A flatten copies what a head inherits into the head and detaches it from its parents, which
/// may then be freed. Two things would be lost: which of the head's clusters are copies (equal
/// bytes, not changes) and the maps of the layers it was detached from (what changed between an
/// older snapshot and the flatten). So each layer that holds flatten copies gets a folder
/// `layers/lineage/<layer number>/` with `copies.map` (an allocation map whose entries name the
/// copied subclusters nothing wrote since), and a detached head's folder holds hard links to the
/// maps (`<number>.map`) and copy records (`<number>.copies`) of every layer of its former chain,
/// oldest first as the catalog's `layer_lineage` rows list them. Frozen maps never change, so a
/// link is as good as a copy and costs nothing. The folder goes when its layer is freed.
struct LineageDirectory: Sendable {
    let path: String

    init(layers: LayerDirectory) {
        path = layers.path + "/lineage"
    }

    func folder(_ layerID: Int64) -> String { "\(path)/\(Self.hex(layerID))" }
    func copiesPath(_ layerID: Int64) -> String { folder(layerID) + "/copies.map" }
    func ancestorMapPath(of head: Int64, _ ancestor: Int64) -> String { folder(head) + "/\(Self.hex(ancestor)).map" }
    func ancestorCopiesPath(of head: Int64, _ ancestor: Int64) -> String { folder(head) + "/\(Self.hex(ancestor)).copies" }

    /// Creates the layer's folder (and the lineage folder) if needed, durably.
    func createFolder(_ layerID: Int64) throws {
        if !SystemDirectory.fileExists(path) {
            try SystemDirectory.create(path)
            try SystemDirectory.synchronize(path + "/..")
        }
        if !SystemDirectory.fileExists(folder(layerID)) {
            try SystemDirectory.create(folder(layerID))
            try SystemDirectory.synchronize(path)
        }
    }

    /// Links the maps and copy records of a detached head's former chain (bottom first; the
    /// bottom's own lineage first of all) into the head's folder, durably, before the catalog
    /// records the detach.
    func recordLineage(of head: Int64, formerChain: [Int64], inheritedFrom bottom: Int64?, layers: LayerDirectory) throws {
        try createFolder(head)
        if let bottom, SystemDirectory.fileExists(folder(bottom)) {
            for name in try SystemDirectory.entries(of: folder(bottom)) where name != "copies.map" {
                try link(folder(bottom) + "/" + name, folder(head) + "/" + name)
            }
        }
        for ancestor in formerChain {
            if SystemDirectory.fileExists(layers.mapPath(ancestor)) {
                try link(layers.mapPath(ancestor), ancestorMapPath(of: head, ancestor))
            }
            if SystemDirectory.fileExists(copiesPath(ancestor)) {
                try link(copiesPath(ancestor), ancestorCopiesPath(of: head, ancestor))
            }
        }
        try SystemDirectory.synchronize(folder(head))
    }

    /// Drops a layer's copy record: after a crash it may name subclusters written since, so every
    /// cluster of the layer counts as changed (listings may then say more than changed, never less).
    func forgetCopies(of layerID: Int64) throws {
        guard SystemDirectory.fileExists(copiesPath(layerID)) else { return }
        try SystemDirectory.removeFile(copiesPath(layerID))
        try SystemDirectory.synchronize(folder(layerID))
    }

    /// Removes the folders of freed layers.
    func remove(_ layerIDs: [Int64]) throws {
        for layerID in layerIDs where SystemDirectory.fileExists(folder(layerID)) {
            for name in try SystemDirectory.entries(of: folder(layerID)) {
                try SystemDirectory.removeFile(folder(layerID) + "/" + name)
            }
            if rmdir(folder(layerID)) != 0 && errno != ENOENT {
                throw StoreError.system("rmdir \(folder(layerID))", errno: errno)
            }
        }
    }

    /// Layer numbers that have a folder.
    func folders() throws -> [Int64] {
        guard SystemDirectory.fileExists(path) else { return [] }
        return try SystemDirectory.entries(of: path).compactMap { name in
            name.count == 16 ? UInt64(name, radix: 16).map { Int64(bitPattern: $0) } : nil
        }
    }

    private func link(_ source: String, _ destination: String) throws {
        if Glibc.link(source, destination) != 0 && errno != EEXIST {
            throw StoreError.system("link \(source)", errno: errno)
        }
    }

    private static func hex(_ layerID: Int64) -> String {
        let digits = String(UInt64(bitPattern: layerID), radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
}
