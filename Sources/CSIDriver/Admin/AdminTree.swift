import AdminProto
import BlockStore

/// The layer forest of a store as `GetTree` answers it: one node per layer, children above
/// their parent, each with its depth, what it holds itself and what it reads from below.
struct AdminTree {
    let topology: StoreTopology
    private let layers: [Int64: StoreTopology.Layer]
    private let children: [Int64: [Int64]]
    private let readers: [Int64: Int]
    private let heads: [Int64: StoreTopology.Head]
    /// Per layer, its visible snapshot first.
    private let points: [Int64: StoreTopology.Point]
    /// Where each multi-node volume lives, by volume id.
    private let placements: [String: Strata_Admin_V1_Placement]

    init(_ topology: StoreTopology, placements: [String: Strata_Admin_V1_Placement] = [:]) {
        self.topology = topology
        self.placements = placements
        layers = Dictionary(uniqueKeysWithValues: topology.layers.map { ($0.id, $0) })
        var children: [Int64: [Int64]] = [:]
        for layer in topology.layers.sorted(by: { $0.id < $1.id }) {
            if let parent = layer.parentID { children[parent, default: []].append(layer.id) }
        }
        self.children = children
        var readers: [Int64: Int] = [:]
        for head in topology.heads {
            var next: Int64? = head.layerID
            var seen = 0
            while let current = next, seen <= layers.count {
                readers[current, default: 0] += 1
                next = layers[current]?.parentID
                seen += 1
            }
        }
        self.readers = readers
        heads = Dictionary(topology.heads.map { ($0.layerID, $0) }) { first, _ in first }
        points = Dictionary(topology.points.map { ($0.layerID, $0) }) { first, second in first.hidden ? second : first }
    }

    /// Every chain from its bottom layer up.
    func forest() -> [Strata_Admin_V1_TreeNode] {
        topology.layers.filter { $0.parentID == nil }.sorted { $0.id < $1.id }.map { node($0.id, below: 0) }
    }

    /// The chain below `layerID` (each with only the branch that leads to it) and all above it.
    func around(_ layerID: Int64) -> [Strata_Admin_V1_TreeNode] {
        var path: [Int64] = []
        var next: Int64? = layerID
        while let current = next, path.count <= layers.count {
            path.append(current)
            next = layers[current]?.parentID
        }
        path.reverse()
        var subtree = node(layerID, below: path.dropLast().reduce(0) { $0 + (layers[$1]?.allocatedBytes ?? 0) })
        for ancestor in path.dropLast().reversed() {
            var parent = node(ancestor, below: path.prefix { $0 != ancestor }.reduce(0) { $0 + (layers[$1]?.allocatedBytes ?? 0) },
                              withChildren: false)
            parent.children = [subtree]
            subtree = parent
        }
        return [subtree]
    }

    private func node(_ id: Int64, below: UInt64, withChildren: Bool = true) -> Strata_Admin_V1_TreeNode {
        let layer = layers[id]!
        var node = Strata_Admin_V1_TreeNode.with {
            $0.layer = id
            $0.depth = Int32(layer.depth)
            $0.ownBytes = Int64(layer.allocatedBytes)
            $0.sharedBytes = Int64(below)
            $0.readers = Int32(readers[id] ?? 0)
        }
        if let head = heads[id] {
            node.kind = .volume
            node.id = head.volume.id
            node.name = head.volume.name
            node.sizeBytes = Int64(head.volume.size)
            if let placement = placements[head.volume.id] { node.placement = placement }
        } else if let point = points[id] {
            if let origin = point.snapshot.originNode {
                node.kind = .replica
                node.originNode = origin
            } else {
                node.kind = point.hidden ? .hiddenSnapshot : .snapshot
            }
            node.id = point.snapshot.id
            node.name = point.snapshot.name
            node.sizeBytes = Int64(point.snapshot.size)
        } else {
            node.kind = layer.imported ? .imported : .retained
        }
        node.imported = layer.imported
        if withChildren {
            node.children = (children[id] ?? []).map { self.node($0, below: below + layer.allocatedBytes) }
        }
        return node
    }
}
