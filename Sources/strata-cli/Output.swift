import AdminProto
import Foundation

/// What the commands print: JSON for programs (snake_case keys, numbers as numbers), aligned
/// text for people.
enum Output {
    static func json(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func jsonObject(_ node: Strata_Admin_V1_TreeNode) -> [String: Any] {
        [
            "layer": Int(node.layer), "kind": kindName(node.kind), "id": node.id, "name": node.name,
            "depth": Int(node.depth), "size_bytes": Int(node.sizeBytes), "own_bytes": Int(node.ownBytes),
            "shared_bytes": Int(node.sharedBytes), "readers": Int(node.readers), "children": node.children.map(jsonObject),
            "origin_node": node.originNode, "imported": node.imported,
            "placement": node.hasPlacement ? jsonObject(node.placement) : NSNull(),
        ]
    }

    static func jsonObject(_ placement: Strata_Admin_V1_Placement) -> [String: Any] {
        [
            "multi_node": placement.multiNode, "epoch": Int(placement.epoch), "staged_here": placement.stagedHere,
            "staged_on": placement.stagedOn, "moving_to": placement.movingTo.isEmpty ? NSNull() : placement.movingTo,
        ]
    }

    static func jsonObject(_ remote: Strata_Admin_V1_RemoteVolume) -> [String: Any] {
        [
            "id": remote.id, "owner_node": remote.ownerNode, "epoch": Int(remote.epoch), "size_bytes": Int(remote.sizeBytes),
            "taking_over": remote.takingOver, "problem": remote.problem.isEmpty ? NSNull() : remote.problem,
        ]
    }

    static func jsonObject(_ object: Strata_Admin_V1_StoreObject) -> [String: Any] {
        [
            "id": object.id, "name": object.name, "size_bytes": Int(object.sizeBytes), "own_bytes": Int(object.ownBytes),
            "shared_bytes": Int(object.sharedBytes), "depth": Int(object.depth), "source": object.source,
            "created_unix_ms": Int(object.createdUnixMs), "origin_node": object.originNode,
            "placement": object.hasPlacement ? jsonObject(object.placement) : NSNull(),
        ]
    }

    static func jsonObject(_ space: Strata_Admin_V1_GetSpaceResponse) -> [String: Any] {
        [
            "capacity_bytes": Int(space.capacityBytes), "free_bytes": Int(space.freeBytes),
            "provisioned_bytes": Int(space.provisionedBytes), "allocated_bytes": Int(space.allocatedBytes),
            "reserve_bytes": Int(space.reserveBytes), "volumes": Int(space.volumes), "snapshots": Int(space.snapshots),
            "hidden_snapshots": Int(space.hiddenSnapshots), "layers": Int(space.layers), "deepest_chain": Int(space.deepestChain),
            "flattening": space.flattening, "replica_snapshots": Int(space.replicaSnapshots),
            "imported_layers": Int(space.importedLayers), "imported_bytes": Int(space.importedBytes),
            "multi_node_volumes": Int(space.multiNodeVolumes), "remote_served_volumes": Int(space.remoteServedVolumes),
            "moving_volumes": Int(space.movingVolumes), "remote_staged_volumes": Int(space.remoteStagedVolumes),
        ]
    }

    static func kindName(_ kind: Strata_Admin_V1_TreeNode.Kind) -> String {
        switch kind {
        case .snapshot: "snapshot"
        case .volume: "volume"
        case .hiddenSnapshot: "hidden-snapshot"
        case .retained: "retained"
        case .replica: "replica"
        case .imported: "imported"
        default: "layer"
        }
    }

    /// 0 B, 512 B, 64 KiB, 1.5 MiB: IEC units, one decimal when not whole.
    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 || value == value.rounded() { return "\(Int(value.rounded())) \(units[unit])" }
        return String(format: "%.1f %@", value, units[unit])
    }

    /// `withPlacement` adds where each volume lives (ReadWriteMany volumes; `-` for the others).
    static func objectTable(_ objects: [Strata_Admin_V1_StoreObject], title: String, sourceHeader: String, withPlacement: Bool = false) -> String {
        var rows = [["NAME", "ID", "SIZE", "OWN", "SHARED", "DEPTH", sourceHeader] + (withPlacement ? ["PLACEMENT"] : [])]
        for object in objects {
            rows.append([object.name, object.id, bytes(object.sizeBytes), bytes(object.ownBytes), bytes(object.sharedBytes),
                         "\(object.depth)", object.source.isEmpty ? "-" : object.source]
                        + (withPlacement ? [object.hasPlacement ? placement(object.placement) : "-"] : []))
        }
        return "\(title) (\(objects.count))\n" + table(rows)
    }

    /// `owner here, epoch 2, staged here and on node-b`; `moving to node-b, epoch 3 (frozen here)`.
    static func placement(_ placement: Strata_Admin_V1_Placement) -> String {
        if !placement.movingTo.isEmpty { return "moving to \(placement.movingTo), epoch \(placement.epoch) (frozen here)" }
        let staged = (placement.stagedHere ? ["here"] : []) + placement.stagedOn
        return "owner here, epoch \(placement.epoch), " + (staged.isEmpty ? "staged nowhere" : "staged " + staged.map { $0 == "here" ? $0 : "on \($0)" }.joined(separator: " and "))
    }

    /// Volumes staged here whose owner is another node; empty when there are none.
    static func remoteTable(_ remotes: [Strata_Admin_V1_RemoteVolume]) -> String {
        guard !remotes.isEmpty else { return "" }
        var rows = [["ID", "OWNER", "EPOCH", "SIZE", "STATE"]]
        for remote in remotes {
            let state = !remote.problem.isEmpty ? remote.problem : remote.takingOver ? "taking ownership" : "served from its owner"
            rows.append([remote.id, remote.ownerNode, "\(remote.epoch)", bytes(remote.sizeBytes), state])
        }
        return "STAGED HERE FROM OTHER NODES (\(remotes.count))\n" + table(rows)
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    static func spaceReport(_ space: Strata_Admin_V1_GetSpaceResponse) -> String {
        func share(_ part: Int64) -> String {
            space.capacityBytes > 0 ? String(format: " (%.1f%% of capacity)", Double(part) * 100 / Double(space.capacityBytes)) : ""
        }
        let rows = [
            ["capacity", bytes(space.capacityBytes)],
            ["free", bytes(space.freeBytes) + share(space.freeBytes)],
            ["provisioned", bytes(space.provisionedBytes) + share(space.provisionedBytes)],
            ["allocated", bytes(space.allocatedBytes) + share(space.allocatedBytes)],
            ["reserve", bytes(space.reserveBytes)],
        ]
        var text = table(rows)
        text += "\(space.volumes) volumes, \(space.snapshots) snapshots (\(space.hiddenSnapshots) hidden), "
            + "\(space.layers) layers, deepest chain \(space.deepestChain)\n"
        text += "copies from other nodes: \(space.replicaSnapshots) replica snapshots, \(space.importedLayers) layers, "
            + "\(bytes(space.importedBytes))\n"
        text += "ReadWriteMany: \(space.multiNodeVolumes) volumes owned here, \(space.remoteServedVolumes) served to other nodes, "
            + "\(space.movingVolumes) moving away; \(space.remoteStagedVolumes) staged here from other nodes\n"
        text += "flattening: " + (space.flattening.isEmpty ? "none" : space.flattening.joined(separator: ", ")) + "\n"
        return text
    }
}

/// The layer forest as an indented tree, one line per layer:
/// `snapshot golden-snap (snap-…)  depth 1  size 16 MiB  own 1 MiB  shared 0 B  readers 4`; a copy
/// of another node's snapshot: `replica (snap-…) from node-a  depth 2  …  own 64 KiB copied  …`.
enum TreePrinter {
    static func render(_ roots: [Strata_Admin_V1_TreeNode]) -> String {
        var lines: [String] = []
        for root in roots { append(root, prefix: "", childPrefix: "", to: &lines) }
        return lines.isEmpty ? "(no layers)\n" : lines.joined(separator: "\n") + "\n"
    }

    static func line(_ node: Strata_Admin_V1_TreeNode) -> String {
        var label = Output.kindName(node.kind)
        if !node.name.isEmpty { label += " " + node.name }
        label += node.id.isEmpty ? " (layer \(node.layer))" : " (\(node.id))"
        if !node.originNode.isEmpty { label += " from \(node.originNode)" }
        var facts = ["depth \(node.depth)"]
        if node.sizeBytes > 0 { facts.append("size \(Output.bytes(node.sizeBytes))") }
        facts += ["own \(Output.bytes(node.ownBytes))" + (node.imported ? " copied" : ""), "shared \(Output.bytes(node.sharedBytes))", "readers \(node.readers)"]
        if node.hasPlacement { facts.append(Output.placement(node.placement)) }
        return label + "  " + facts.joined(separator: "  ")
    }

    private static func append(_ node: Strata_Admin_V1_TreeNode, prefix: String, childPrefix: String, to lines: inout [String]) {
        lines.append(prefix + line(node))
        for (index, child) in node.children.enumerated() {
            let last = index == node.children.count - 1
            append(child, prefix: childPrefix + (last ? "└── " : "├── "), childPrefix: childPrefix + (last ? "    " : "│   "), to: &lines)
        }
    }
}
