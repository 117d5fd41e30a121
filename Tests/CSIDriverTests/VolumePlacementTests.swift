import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// Where a ReadWriteMany volume lives, said by every report an admin reads: the CSI volume
/// conditions (ListVolumes, ControllerGetVolume, NodeGetVolumeStats), `strata ls/tree/df`,
/// the metrics and the logs, on real drivers in two network namespaces: owned by A and staged
/// on A and B, then after A lets go and B takes it over.
@Suite("Volume placement reports", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available), .blockingTolerant)
struct VolumePlacementTests {
    @Test("Owner, epoch and stagers of an RWX volume in every report, before and after its handover; the handover counted, timed and logged on both nodes")
    func reportsFollowTheVolume() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]
        let disk = try await a.controller { try await $0.createVolume(ReadWriteManyTests.sharedVolume("vm-disk")) }.volume.volumeID
        let single = try await a.controller { try await $0.createVolume(MultiNode.blockVolume("rwo", bytes: 16 << 20)) }.volume.volumeID

        #expect(try await Self.listedCondition(disk, on: a) == "volume is healthy; lives on node node-a (ownership epoch 1); staged on no node")
        #expect(try await Self.listedCondition(single, on: a) == "volume is healthy", "a single-node volume says only its health")

        // The VM runs on A; the migration target B stages it too.
        _ = try await a.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        _ = try await b.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        let sharedOnA = "volume is healthy; lives on node node-a (ownership epoch 1); staged on node-a and node-b (served remotely from node-a)"
        #expect(try await Self.listedCondition(disk, on: a) == sharedOnA)
        #expect(try await Self.getCondition(disk, on: a) == sharedOnA)
        #expect(try await Self.getCondition(disk, on: b) == sharedOnA, "B forwards ControllerGetVolume to the owner")
        #expect(try await Self.listedCondition(disk, on: b) == nil, "B's store does not hold the volume")
        #expect(try await Self.nodeCondition(disk, on: a)
            == "volume is healthy; lives here on node node-a (ownership epoch 1); also staged on node-b, which reaches it through this node")
        #expect(try await Self.nodeCondition(disk, on: b) == "volume is healthy; served from its owner, node node-a (ownership epoch 1)")

        #expect(try await Self.gauges(a) == [1, 1, 0, 0], "A owns one RWX volume, which B reaches remotely")
        #expect(try await Self.gauges(b) == [0, 0, 0, 1], "B stages one volume whose owner is A")

        let listA = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: Self.adminSocket(a)))
        let volumesA = listA["volumes"] as! [[String: Any]]
        let placement = volumesA.first { $0["id"] as? String == disk }?["placement"] as? [String: Any]
        #expect(placement?["epoch"] as? Int == 1 && placement?["staged_here"] as? Bool == true)
        #expect(placement?["staged_on"] as? [String] == ["node-b"] && placement?["moving_to"] is NSNull)
        #expect(volumesA.first { $0["id"] as? String == single }?["placement"] is NSNull)
        let listB = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: Self.adminSocket(b)))
        let remote = (listB["remote_volumes"] as! [[String: Any]]).map {
            "\($0["id"]!) \($0["owner_node"]!) \($0["epoch"]!) \($0["size_bytes"]!) \($0["taking_over"] as? Bool == true) \($0["problem"]!)"
        }
        #expect(remote == ["\(disk) node-a 1 \(ReadWriteManyTests.volumeBytes) false <null>"])
        let treeA = try await AdminCLITests.strata(["tree"], socket: Self.adminSocket(a))
        #expect(treeA.output.contains("owner here, epoch 1, staged here and on node-b"), "\(treeA.output)")
        let lsB = try await AdminCLITests.strata(["ls"], socket: Self.adminSocket(b))
        #expect(lsB.output.contains("STAGED HERE FROM OTHER NODES (1)") && lsB.output.contains("served from its owner"), "\(lsB.output)")
        let dfB = try AdminCLITests.json(try await AdminCLITests.strata(["df", "--json"], socket: Self.adminSocket(b)))
        #expect(dfB["remote_staged_volumes"] as? Int == 1 && dfB["multi_node_volumes"] as? Int == 0)

        // The migration ends: A lets go and B takes the volume over, once.
        try await a.detach(disk)
        try await ReadWriteManyTests.waitUntilOwned(disk, by: b)
        try await ReadWriteManyTests.waitFor("A releasing the volume") { try await a.metric("strata_handovers_released_total") == 1 }
        #expect(try await b.metric("strata_handovers_completed_total") == 1)
        #expect(try await b.metric("strata_handovers_started_total") >= 1, "a takeover the volume lock turned away is retried and counted again")
        #expect(try await b.metric("strata_handover_io_pause_seconds_count") == 1, "one takeover held the I/O once")
        let pause = try await b.metric("strata_handover_io_pause_seconds_sum")
        #expect(pause > 0, "the pause B measured is recorded (its size is the benchmark's business, not a test's)")
        #expect(try await a.metric("strata_handovers_completed_total") == 0)

        let ownedByB = "volume is healthy; lives on node node-b (ownership epoch 2); staged on node-b"
        #expect(try await Self.getCondition(disk, on: a) == ownedByB, "A forwards to the new owner")
        #expect(try await Self.listedCondition(disk, on: b) == ownedByB)
        #expect(try await Self.listedCondition(disk, on: a) == nil, "A deleted its copy")
        #expect(try await Self.nodeCondition(disk, on: b) == "volume is healthy; lives here on node node-b (ownership epoch 2)")
        #expect(try await Self.gauges(a) == [0, 0, 0, 0])
        #expect(try await Self.gauges(b) == [1, 0, 0, 0])
        let listAfter = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: Self.adminSocket(b)))
        #expect((listAfter["remote_volumes"] as! [[String: Any]]).isEmpty)

        // Each step is one line naming the volume, both nodes and the epoch, on the node that took it.
        Self.expectLine(in: b.log, "took ownership of a volume from its previous node", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=2", "ioPause="])
        Self.expectLine(in: b.log, "asking the owner to hand a volume over", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=1"])
        Self.expectLine(in: b.log, "copied the bulk of a volume", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=1"])
        Self.expectLine(in: a.log, "unstaged a volume another node still stages", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=1"])
        Self.expectLine(in: a.log, "froze a volume for its next owner", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=2"])
        Self.expectLine(in: a.log, "handed a volume over and deleted it here", ["volumeId=\(disk)", "from=node-a", "to=node-b", "epoch=2"])

        try await b.detach(disk)
        _ = try await b.controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
        _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = single }) }
    }

    @Test("While the owner is down, strata ls on the node serving the volume from it says why its I/O waits; once the owner is back, nothing")
    func ownerDownInTheCLI() async throws {
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        for node in ["a", "b"] { try cluster.start(node) }
        let a = cluster["a"], b = cluster["b"]
        let disk = try await a.controller { try await $0.createVolume(ReadWriteManyTests.sharedVolume("vm-disk")) }.volume.volumeID
        // A stages it too (the VM's source), so the volume stays A's: staged on B alone, it would
        // move to B at once.
        _ = try await a.attach(disk, capability: ReadWriteManyTests.sharedBlock)
        let deviceB = try await b.attach(disk, capability: ReadWriteManyTests.sharedBlock)

        // A stops (SIGTERM: nothing of A's own waits on its exports; its restart re-serves them);
        // a read on B waits for it.
        a.stop()
        try ReadWriteManyTests.dropCache(deviceB)
        let waiting = ReadWriteManyTests.readInBackground(4096, from: deviceB, at: 0)
        var problem: String?
        try await ReadWriteManyTests.waitFor("B's CLI naming the owner that does not answer") {
            let list = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: Self.adminSocket(b)))
            problem = (list["remote_volumes"] as? [[String: Any]])?.first?["problem"] as? String
            return problem != nil
        }
        #expect(problem?.contains("node-a") == true && problem?.contains("I/O waits") == true, "\(problem ?? "")")
        let text = try await AdminCLITests.strata(["ls"], socket: Self.adminSocket(b))
        #expect(text.output.contains("STAGED HERE FROM OTHER NODES (1)") && text.output.contains("has not answered"), "\(text.output)")
        #expect(waiting.result == nil, "the read waits for the owner")

        try cluster.start("a")
        #expect(try await waiting.value() == Data(count: 4096))
        let list = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: Self.adminSocket(b)))
        let remote = (list["remote_volumes"] as? [[String: Any]])?.first
        #expect(remote?["owner_node"] as? String == "node-a" && remote?["problem"] is NSNull, "\(String(describing: remote))")
        try await b.detach(disk)
        try await a.detach(disk)
        _ = try await a.controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
    }

    static func adminSocket(_ node: ClusterNode) -> String { node.stateDirectory + "/admin.sock" }

    /// multi_node_volumes, remote_served_volumes, moving_volumes, remote_staged_volumes.
    static func gauges(_ node: ClusterNode) async throws -> [Double] {
        var values: [Double] = []
        for name in ["strata_multi_node_volumes", "strata_remote_served_volumes", "strata_moving_volumes", "strata_remote_staged_volumes"] {
            values.append(try await node.metric(name))
        }
        return values
    }

    /// The volume's condition as ListVolumes on `node` reports it; nil when that node does not list it.
    static func listedCondition(_ volumeID: String, on node: ClusterNode) async throws -> String? {
        let entries = try await node.controller { try await $0.listVolumes(.init()) }.entries
        guard let entry = entries.first(where: { $0.volume.volumeID == volumeID }) else { return nil }
        #expect(!entry.status.volumeCondition.abnormal)
        #expect(entry.status.publishedNodeIds.isEmpty, "LIST_VOLUMES_PUBLISHED_NODES is not advertised")
        return entry.status.volumeCondition.message
    }

    static func getCondition(_ volumeID: String, on node: ClusterNode) async throws -> String {
        let status = try await node.controller { try await $0.controllerGetVolume(.with { $0.volumeID = volumeID }) }.status
        #expect(!status.volumeCondition.abnormal)
        return status.volumeCondition.message
    }

    static func nodeCondition(_ volumeID: String, on node: ClusterNode) async throws -> String {
        let condition = try await ReadWriteManyTests.volumeStats(volumeID, on: node).volumeCondition
        #expect(!condition.abnormal)
        return condition.message
    }

    static func expectLine(in log: String, _ message: String, _ fields: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let lines = log.split(separator: "\n").filter { $0.contains(message) }
        #expect(lines.contains { line in fields.allSatisfy { line.contains($0) } },
                "no line \"\(message)\" with \(fields) in:\n\(lines.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }
}
