import BlockStore
@testable import CSIDriver
import CSIValidation
import Foundation
import StrataTestSupport
import Testing

/// Copies held from other nodes: a replica of another store's snapshot, as the peer service
/// makes it (export there, import here, without the network), and a clone of it.
extension AdminCLITests {
    /// Copies `snapshotID` of `source` into `target` layer by layer through the store's export
    /// and import interface, recording `origin` as the node it came from.
    static func replicate(_ snapshotID: String, from source: BlockStore, to target: BlockStore, origin: String) throws {
        let manifest = try source.replicaManifest(snapshotID: snapshotID)
        guard let replica = try target.beginReplicaImport(manifest, originNode: origin) else {
            throw CSIError.internalError("\(snapshotID) is here already")
        }
        for layer in replica.missingLayers {
            let export = try source.exportLayer(snapshotID: snapshotID, layerUUID: layer.uuid)
            try replica.beginLayer(layer.uuid)
            for extent in try export.extents(maximumLength: 256 << 10) {
                var bytes = [UInt8](repeating: 0, count: extent.isZero ? 0 : Int(extent.length))
                try bytes.withUnsafeMutableBytes { try export.read(into: $0, at: extent.offset) }
                try bytes.withUnsafeBytes { try replica.write(layer: layer.uuid, extent: extent, bytes: $0) }
            }
            try replica.finishLayer(layer.uuid)
        }
        _ = try replica.commit()
    }

    @Test("A replica of another node's snapshot shows in tree as a copy from that node over its imported layers, and df counts the copies as the census does")
    func copiesFromAnotherNode() async throws {
        let originDirectory = try TemporaryDirectory()
        let origin = try BlockStore(directory: originDirectory.path, options: StoreOptions(backgroundFlatten: false))
        defer { origin.close() }
        // Node A: 256 KiB in its first snapshot, 64 KiB more in the second (64 KiB clusters).
        let golden = try origin.createVolume(name: "golden", size: 4 << 20, clusterSize: 65536)
        try write(Data(repeating: 0x5A, count: 256 << 10), to: golden.id, at: 0, store: origin)
        let first = try origin.createSnapshot(name: "s1", of: golden.id)
        try write(Data(repeating: 0xA5, count: 64 << 10), to: golden.id, at: 1 << 20, store: origin)
        let second = try origin.createSnapshot(name: "s2", of: golden.id)

        let directory = try TemporaryDirectory()
        let socket = directory.path + "/admin.sock"
        try await InProcessDriver.with(directory: directory, configure: {
            $0.adminEndpoint = try? UnixSocketEndpoint(parsing: "unix://\(socket)")
        }) { driver in
            let store = try driver.store
            try Self.replicate(second.id, from: origin, to: store, origin: "node-a")
            let clone = try await driver.controller.createVolume(Requests.createVolume("clone", bytes: 4 << 20, snapshot: second.id)).volume.volumeID
            try write(Data(repeating: 0xC1, count: 64 << 10), to: clone, at: 2 << 20, store: store)
            #expect(try read(64 << 10, from: clone, at: 1 << 20, store: store) == Data(repeating: 0xA5, count: 64 << 10))
            let census = try store.census()
            #expect(census.replicaSnapshots == 1 && census.importedLayers == 2 && census.importedBytes == 320 << 10)

            let tree = try Self.json(try await Self.strata(["tree", "--json"], socket: socket))
            let roots = tree["roots"] as! [[String: Any]]
            func shape(_ node: [String: Any]) -> String {
                let children = (node["children"] as! [[String: Any]]).map(shape)
                let copied = node["imported"] as? Bool == true ? "copied" : "local"
                return "\(node["kind"]!) \(node["id"]!) \(node["origin_node"]!) \(copied) \(node["depth"]!) "
                    + "\(node["own_bytes"]!) \(node["shared_bytes"]!) \(node["readers"]!)"
                    + (children.isEmpty ? "" : " [" + children.joined(separator: ", ") + "]")
            }
            // The first snapshot's layer came along without its snapshot; the replica keeps node A's id.
            #expect(roots.map(shape) == [
                "imported   copied 1 \(256 << 10) 0 1 [replica \(second.id) node-a copied 2 \(64 << 10) \(256 << 10) 1 "
                    + "[volume \(clone)  local 3 \(64 << 10) \(320 << 10) 1]]",
            ])
            var nodes: [[String: Any]] = []
            func collect(_ node: [String: Any]) {
                nodes.append(node)
                (node["children"] as! [[String: Any]]).forEach(collect)
            }
            roots.forEach(collect)
            let imported = nodes.filter { $0["imported"] as? Bool == true }
            #expect(imported.count == census.importedLayers)
            #expect(imported.reduce(0) { $0 + ($1["own_bytes"] as! Int) } == Int(census.importedBytes))
            #expect(nodes.filter { $0["kind"] as? String == "replica" }.count == census.replicaSnapshots)
            #expect(nodes.filter { $0["kind"] as? String == "snapshot" }.count == census.snapshots)
            #expect(nodes.count == census.layers && nodes.reduce(0) { $0 + ($1["own_bytes"] as! Int) } == Int(census.allocatedBytes))
            #expect(!nodes.contains { $0["id"] as? String == first.id }, "node A's first snapshot is not held here")

            // For people: the replica names the node it came from, and copied bytes say so.
            let bottom = roots[0]["layer"] as! Int
            let text = try await Self.strata(["tree"], socket: socket)
            #expect(text.status == 0)
            #expect(text.output.split(separator: "\n").map(String.init) == [
                "imported (layer \(bottom))  depth 1  own 256 KiB copied  shared 0 B  readers 1",
                "└── replica (\(second.id)) from node-a  depth 2  size 4 MiB  own 64 KiB copied  shared 256 KiB  readers 1",
                "    └── volume clone (\(clone))  depth 3  size 4 MiB  own 64 KiB  shared 320 KiB  readers 1",
            ], "\(text.output)")
            let around = try Self.json(try await Self.strata(["tree", "--json", second.id], socket: socket))
            #expect((around["roots"] as! [[String: Any]]).map(shape) == roots.map(shape))

            let space = try Self.json(try await Self.strata(["df", "--json"], socket: socket))
            #expect([space["replica_snapshots"], space["imported_layers"], space["imported_bytes"]].map { $0 as? Int }
                == [census.replicaSnapshots, census.importedLayers, Int(census.importedBytes)])
            #expect([space["snapshots"], space["layers"], space["allocated_bytes"]].map { $0 as? Int }
                == [0, census.layers, Int(census.allocatedBytes)])
            let dfText = try await Self.strata(["df"], socket: socket)
            #expect(dfText.output.contains("copies from other nodes: 1 replica snapshots, 2 layers, 320 KiB"), "\(dfText.output)")

            let list = try Self.json(try await Self.strata(["ls", "--json"], socket: socket))
            #expect((list["snapshots"] as! [[String: Any]]).map { "\($0["id"]!) \($0["origin_node"]!)" } == ["\(second.id) node-a"])
            #expect(try store.census() == census && store.checkConsistency().isClean)
        }
    }
}
