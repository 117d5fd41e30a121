#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import AdminProto
import BlockStore
@testable import CSIDriver
import CSIValidation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Peering
import StrataTestSupport
import Synchronization
import Testing

/// The real `strata` binary against a driver serving a golden image's family: a golden snapshot,
/// three clones, a snapshot of one clone and a clone of that (depth 3), while a clone is being
/// written and read.
@Suite("strata CLI over the admin socket", .serialized, .blockingTolerant)
struct AdminCLITests {
    /// The CLI `swift build` put beside the test bundle.
    static var binaryPath: String {
        (DriverProcess.binaryPath as NSString).deletingLastPathComponent + "/strata"
    }

    static func strata(_ arguments: [String], socket: String?) async throws -> ExternalTool.Outcome {
        try await BlockingWork.run {
            try ExternalTool.outcome(binaryPath, arguments + (socket.map { ["--endpoint", "unix://\($0)"] } ?? []), errors: .separate)
        }
    }

    static func json(_ run: ExternalTool.Outcome) throws -> [String: Any] {
        guard run.status == 0 else { throw CSIError.internalError("strata exited \(run.status): \(run.errors)") }
        return try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as! [String: Any]
    }

    @Test("strata-csi serves the admin socket at <state-dir>/admin.sock, mode 0600, where the CLI looks by default; a clean stop removes it")
    func defaultSocket() async throws {
        let driver = try DriverProcess.started()
        let state = driver.directory.path + "/state"
        var info = stat()
        #expect(stat(state + "/admin.sock", &info) == 0 && info.st_mode & 0o777 == 0o600)
        let space = try Self.json(try await Self.strata(["df", "--json", "--state-dir", state], socket: nil))
        #expect(space["volumes"] as? Int == 0 && space["layers"] as? Int == 0)
        driver.signal(SIGTERM)
        #expect(try driver.waitForExit() == 0)
        #expect(!FileManager.default.fileExists(atPath: state + "/admin.sock"))
    }

    @Test("tree, ls and df report the family exactly, agree with the census, and change nothing while I/O runs; flatten makes depth 1")
    func familyOfAGoldenImage() async throws {
        let directory = try TemporaryDirectory()
        let socket = directory.path + "/admin.sock"
        try await InProcessDriver.with(directory: directory, configure: {
            $0.adminEndpoint = try? UnixSocketEndpoint(parsing: "unix://\(socket)")
        }) { driver in
            var info = stat()
            #expect(stat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600, "the admin socket must be root-only")
            let store = try driver.store
            func create(_ name: String, snapshot: String? = nil) async throws -> String {
                try await driver.controller.createVolume(Requests.createVolume(name, bytes: 16 << 20, snapshot: snapshot)).volume.volumeID
            }
            func snapshot(_ name: String, of volume: String) async throws -> String {
                try await driver.controller.createSnapshot(Requests.createSnapshot(name, of: volume)).snapshot.snapshotID
            }
            let golden = try await create("golden")
            try write(Data(repeating: 0x5A, count: 256 << 10), to: golden, at: 0, store: store)
            let goldenSnap = try await snapshot("golden-snap", of: golden)
            let c1 = try await create("c1", snapshot: goldenSnap)
            let c2 = try await create("c2", snapshot: goldenSnap)
            let c3 = try await create("c3", snapshot: goldenSnap)
            try write(Data(repeating: 0xC1, count: 64 << 10), to: c1, at: 1 << 20, store: store)
            let c1Snap = try await snapshot("c1-snap", of: c1)
            let d = try await create("d", snapshot: c1Snap)
            try write(Data(repeating: 0xC2, count: 64 << 10), to: c2, at: 2 << 20, store: store)

            // I/O goes on through the CLI calls: c2 rewrites the cluster it holds and reads it back.
            let handle = try store.open(volumeID: c2)
            let stop = Atomic<Bool>(false)
            let io = Task {
                var rounds = 0
                while !stop.load(ordering: .relaxed) {
                    let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: rounds), count: 64 << 10)
                    try await BlockingWork.run {
                        try bytes.withUnsafeBytes { try handle.write($0, at: 2 << 20) }
                        try handle.flush()
                        var back = [UInt8](repeating: 0, count: 64 << 10)
                        try back.withUnsafeMutableBytes { try handle.read(into: $0, at: 2 << 20) }
                        guard back == bytes else { throw CSIError.internalError("c2 read back other bytes") }
                    }
                    rounds += 1
                }
                return rounds
            }
            let census = try store.census()
            let references = try store.layerReferenceCounts()

            let tree = try Self.json(try await Self.strata(["tree", "--json"], socket: socket))
            let roots = tree["roots"] as! [[String: Any]]
            #expect(roots.count == 1)
            func shape(_ node: [String: Any]) -> String {
                let children = (node["children"] as! [[String: Any]]).map(shape)
                return "\(node["kind"]!) \(node["name"]!) \(node["depth"]!)" + (children.isEmpty ? "" : " [" + children.joined(separator: ", ") + "]")
            }
            #expect(shape(roots[0]) == "snapshot golden-snap 1 [volume golden 2, snapshot c1-snap 2 [volume c1 3, volume d 3], volume c2 2, volume c3 2]")
            var nodes: [String: [String: Any]] = [:]
            func collect(_ node: [String: Any]) {
                nodes[node["name"] as! String] = node
                (node["children"] as! [[String: Any]]).forEach(collect)
            }
            collect(roots[0])
            func facts(_ name: String) -> [Int] {
                ["own_bytes", "shared_bytes", "readers", "size_bytes"].map { nodes[name]![$0] as! Int }
            }
            #expect(facts("golden-snap") == [256 << 10, 0, 5, 16 << 20])
            #expect(facts("c1-snap") == [64 << 10, 256 << 10, 2, 16 << 20])
            #expect(facts("c2") == [64 << 10, 256 << 10, 1, 16 << 20])
            #expect(facts("d") == [0, 320 << 10, 1, 16 << 20])
            #expect(facts("golden") == [0, 256 << 10, 1, 16 << 20])
            #expect(nodes["c1-snap"]!["id"] as? String == c1Snap && nodes["d"]!["id"] as? String == d)
            #expect(nodes.values.reduce(0) { $0 + ($1["own_bytes"] as! Int) } == Int(census.allocatedBytes))
            #expect(nodes.count == census.layers && (nodes.values.map { $0["depth"] as! Int }.max() ?? 0) == census.deepestChain)
            #expect(nodes.values.filter { $0["kind"] as? String == "volume" }.count == census.volumes)
            #expect(nodes.values.filter { $0["kind"] as? String == "snapshot" }.count == census.snapshots)

            // The same facts for people.
            let text = try await Self.strata(["tree"], socket: socket)
            #expect(text.status == 0)
            let lines = text.output.split(separator: "\n").map(String.init)
            #expect(lines == [
                "snapshot golden-snap (\(goldenSnap))  depth 1  size 16 MiB  own 256 KiB  shared 0 B  readers 5",
                "├── volume golden (\(golden))  depth 2  size 16 MiB  own 0 B  shared 256 KiB  readers 1",
                "├── snapshot c1-snap (\(c1Snap))  depth 2  size 16 MiB  own 64 KiB  shared 256 KiB  readers 2",
                "│   ├── volume c1 (\(c1))  depth 3  size 16 MiB  own 0 B  shared 320 KiB  readers 1",
                "│   └── volume d (\(d))  depth 3  size 16 MiB  own 0 B  shared 320 KiB  readers 1",
                "├── volume c2 (\(c2))  depth 2  size 16 MiB  own 64 KiB  shared 256 KiB  readers 1",
                "└── volume c3 (\(c3))  depth 2  size 16 MiB  own 0 B  shared 256 KiB  readers 1",
            ], "\(text.output)")

            // One object: its chain below (only the branch to it) and all above it.
            let around = try Self.json(try await Self.strata(["tree", "--json", "c1-snap"], socket: socket))
            #expect(shape((around["roots"] as! [[String: Any]])[0]) == "snapshot golden-snap 1 [snapshot c1-snap 2 [volume c1 3, volume d 3]]")

            let list = try Self.json(try await Self.strata(["ls", "--json"], socket: socket))
            let volumes = (list["volumes"] as! [[String: Any]]).map { "\($0["name"]!) \($0["depth"]!) \($0["own_bytes"]!) \($0["shared_bytes"]!)" }
            #expect(Set(volumes) == ["golden 2 0 262144", "c1 3 0 327680", "c2 2 65536 262144", "c3 2 0 262144", "d 3 0 327680"])
            let snapshots = (list["snapshots"] as! [[String: Any]]).map { "\($0["name"]!) \($0["source"]!) \($0["size_bytes"]!)" }
            #expect(snapshots == ["golden-snap \(golden) \(16 << 20)", "c1-snap \(c1) \(16 << 20)"])
            let human = try await Self.strata(["ls"], socket: socket)
            #expect(human.output.contains("VOLUMES (5)") && human.output.contains("SNAPSHOTS (2)"))
            #expect(human.output.split(separator: "\n").contains { $0.hasPrefix("c1-snap") && $0.contains(c1Snap) && $0.contains("64 KiB") })

            let space = try Self.json(try await Self.strata(["df", "--json"], socket: socket))
            let capacity = try store.capacity()
            #expect(space["allocated_bytes"] as? Int == Int(census.allocatedBytes))
            #expect(space["provisioned_bytes"] as? Int == 5 * (16 << 20))
            #expect(space["capacity_bytes"] as? Int == Int(capacity.totalBytes))
            #expect(space["reserve_bytes"] as? Int == 8 << 20)
            #expect([space["volumes"], space["snapshots"], space["layers"], space["deepest_chain"]].map { $0 as? Int } == [5, 2, 7, 3])
            let dfText = try await Self.strata(["df"], socket: socket)
            #expect(dfText.output.contains("provisioned  80 MiB") && dfText.output.contains("5 volumes, 2 snapshots (0 hidden), 7 layers, deepest chain 3"))

            // Errors are one clear line and a failed exit.
            let missing = try await Self.strata(["tree", "no-such-volume"], socket: socket)
            #expect(missing.status == 1 && missing.errors.contains("notFound") && missing.output.isEmpty)
            let nowhere = try await Self.strata(["df"], socket: directory.path + "/nothing.sock")
            #expect(nowhere.status == 1 && nowhere.errors.contains("no admin socket"))

            stop.store(true, ordering: .relaxed)
            #expect(try await io.value > 0, "c2 must have been written while the CLI ran")
            try handle.close()
            // Reading changed nothing.
            #expect(try store.census() == census && store.layerReferenceCounts() == references)
            #expect(try store.checkConsistency().isClean)

            // Flatten goes through the driver's store: d stops depending on its snapshots.
            let flattened = try Self.json(try await Self.strata(["flatten", "--json", "d"], socket: socket))
            #expect(flattened["depth"] as? Int == 1 && flattened["finished"] as? Bool == true)
            #expect(try store.volume(id: d).chainDepth == 1)
            #expect(try read(64 << 10, from: d, at: 1 << 20, store: store) == Data(repeating: 0xC1, count: 64 << 10))
            #expect(try read(4096, from: d, at: 0, store: store) == Data(repeating: 0x5A, count: 4096))
            let after = try Self.json(try await Self.strata(["tree", "--json", "d"], socket: socket))
            #expect(shape((after["roots"] as! [[String: Any]])[0]) == "volume d 1")
        }
    }

    @Test("Hidden snapshots behind clones of volumes and layers of deleted snapshots show as such; bad references get clear codes")
    func otherKinds() async throws {
        let directory = try TemporaryDirectory()
        let socket = directory.path + "/admin.sock"
        try await InProcessDriver.with(directory: directory, configure: {
            $0.adminEndpoint = try? UnixSocketEndpoint(parsing: "unix://\(socket)")
        }) { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("v", bytes: 1 << 20)).volume.volumeID
            _ = try await driver.controller.createVolume(Requests.createVolume("copy", bytes: 1 << 20, volume: volume))
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("s", of: volume)).snapshot.snapshotID
            _ = try await driver.controller.createVolume(Requests.createVolume("clone", bytes: 1 << 20, snapshot: snapshot))
            _ = try await driver.controller.deleteSnapshot(.with { $0.snapshotID = snapshot })
            try await withGRPCClient(
                transport: .http2NIOPosix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
            ) { client in
                let admin = Strata_Admin_V1_Admin.Client(wrapping: client)
                let roots = try await admin.getTree(.init()).roots
                func shape(_ node: Strata_Admin_V1_TreeNode) -> String {
                    "\(node.kind) \(node.name)" + (node.children.isEmpty ? "" : " [" + node.children.map(shape).joined(separator: ", ") + "]")
                }
                #expect(roots.map(shape) == ["hiddenSnapshot  [volume copy, retained  [volume v, volume clone]]"])
                #expect(await statusCode { try await admin.getTree(.with { $0.object = "s" }) } == .notFound)
                #expect(await statusCode { try await admin.getTree(.with { $0.object = String(repeating: "x", count: 2000) }) } == .invalidArgument)
                #expect(await statusCode { try await admin.flatten(.with { $0.volume = "" }) { try await $0.messages.reduce(0) { n, _ in n + 1 } } } == .invalidArgument)
                #expect(await statusCode { try await admin.flatten(.with { $0.volume = "nothing" }) { try await $0.messages.reduce(0) { n, _ in n + 1 } } } == .notFound)
                let space = try await admin.getSpace(.init())
                #expect(space.volumes == 3 && space.snapshots == 0 && space.hiddenSnapshots == 1 && space.layers == 5)
            }
        }
    }
}
