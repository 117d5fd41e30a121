import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import StrataTestSupport
import Testing

/// A volume mid-handover, as its old owner reports it: frozen for the node taking it over (the
/// store's state between the owner's freeze and the new owner's release, which a real handover
/// passes through in milliseconds), set up directly in the store so each report can be read in it.
@Suite("Moving volume reports", .blockingTolerant)
struct MovingVolumeReportTests {
    @Test("Frozen for node-b: the conditions, strata ls/tree/df and the census say it is moving, from where to where, at which epoch")
    func frozenForItsNextOwner() async throws {
        let directory = try TemporaryDirectory()
        let socket = directory.path + "/admin.sock"
        try await InProcessDriver.with(directory: directory, configure: {
            $0.adminEndpoint = try? UnixSocketEndpoint(parsing: "unix://\(socket)")
        }) { driver in
            let store = try driver.store
            let shared = try store.createVolume(name: "vm-disk", size: 4 << 20, multiNode: true)
            let plain = try store.createVolume(name: "plain", size: 4 << 20)
            try store.addRemoteStager("node-b", toVolume: shared.id)
            var census = try store.census()
            #expect(Self.sharing(census) == [1, 1, 0])
            let served = try await driver.controller.controllerGetVolume(.with { $0.volumeID = shared.id }).status.volumeCondition
            #expect(served.message == "volume is healthy; lives on node test-node (ownership epoch 1); staged on node-b (served remotely from test-node)")

            try store.fenceVolume(id: shared.id, movedTo: "node-b")
            census = try store.census()
            #expect(Self.sharing(census) == [1, 1, 1])
            let moving = "volume is moving from node test-node to node node-b (ownership epoch 2): frozen on test-node, "
                + "which takes no more writes for it; its copy there is deleted once node-b holds it"
            let got = try await driver.controller.controllerGetVolume(.with { $0.volumeID = shared.id }).status.volumeCondition
            #expect(got.message == moving && !got.abnormal)
            let listed = try await driver.controller.listVolumes(.init()).entries
            #expect(listed.map { "\($0.volume.volumeID) \($0.status.volumeCondition.message)" }.sorted()
                == ["\(plain.id) volume is healthy", "\(shared.id) \(moving)"].sorted())

            let list = try AdminCLITests.json(try await AdminCLITests.strata(["ls", "--json"], socket: socket))
            let placements = Dictionary(uniqueKeysWithValues: (list["volumes"] as! [[String: Any]]).map { ($0["id"] as! String, $0["placement"]!) })
            let placement = placements[shared.id] as? [String: Any]
            #expect(placement?["moving_to"] as? String == "node-b" && placement?["epoch"] as? Int == 2)
            #expect(placement?["staged_on"] as? [String] == ["node-b"] && placement?["staged_here"] as? Bool == false)
            #expect(placements[plain.id] is NSNull)
            let tree = try await AdminCLITests.strata(["tree"], socket: socket)
            #expect(tree.output.split(separator: "\n").contains { $0.contains("volume vm-disk") && $0.contains("moving to node-b, epoch 2 (frozen here)") },
                    "\(tree.output)")
            let ls = try await AdminCLITests.strata(["ls"], socket: socket)
            #expect(ls.output.contains("PLACEMENT") && !ls.output.contains("STAGED HERE FROM OTHER NODES"), "\(ls.output)")
            let space = try AdminCLITests.json(try await AdminCLITests.strata(["df", "--json"], socket: socket))
            #expect([space["multi_node_volumes"], space["remote_served_volumes"], space["moving_volumes"], space["remote_staged_volumes"]]
                .map { $0 as? Int } == [1, 1, 1, 0])
            let df = try await AdminCLITests.strata(["df"], socket: socket)
            #expect(df.output.contains("ReadWriteMany: 1 volumes owned here, 1 served to other nodes, 1 moving away; 0 staged here from other nodes"),
                    "\(df.output)")
        }
    }

    /// Multi-node volumes, those another node stages, those moving away.
    static func sharing(_ census: StoreCensus) -> [Int] { [census.multiNodeVolumes, census.remotelyStagedVolumes, census.movingVolumes] }
}
