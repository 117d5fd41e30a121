#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import StrataTestSupport
import Testing

/// What the keeper must not do (serve a descriptor for the wrong volume) and what its own
/// crash costs (the volumes it held are cut at the driver's next restart, reported abnormal,
/// and come back when their pods restart).
@Suite("FUSE keeper failures", .serialized, .enabled(if: NodeEnvironment.available), .blockingTolerant)
struct KeeperFailureTests {
    static let patternBytes = 1 << 20

    @Test("a descriptor recorded for another volume is refused, and nothing reaches the wrong volume", .timeLimit(.minutes(3)))
    func swappedRegistryEntries() async throws {
        let node = try RestartedNode(withKeeper: true)
        var volumes: [RestartedNode.Volume] = []
        for (index, name) in ["a", "b", "c"].enumerated() {
            let id = try await node.create(name, capability: Requests.blockCapability, bytes: 16 << 20)
            let volume = try await node.stageAndPublish(id, capability: Requests.blockCapability, pod: "pod-\(name)")
            try RawDevice.write(Data(repeating: UInt8(0xA1 + index), count: Self.patternBytes), to: volume.target, at: 0)
            volumes.append(volume)
        }
        node.driver.signal(SIGKILL)
        _ = try node.driver.waitForExit()
        try Self.swapIdentities(of: volumes[0].id, and: volumes[1].id, registry: node.directory.path + "/state/node/staged-volumes.json")
        try node.restart(with: 0)

        // The two swapped volumes are refused and say so; the third is served as before.
        let a = try await node.abnormality(volumes[0])
        let b = try await node.abnormality(volumes[1])
        #expect(a?.contains("does not match") == true, "\(a ?? "healthy")")
        #expect(b?.contains("does not match") == true, "\(b ?? "healthy")")
        #expect(try await node.abnormality(volumes[2]) == nil)
        try RawDevice.write(Data(repeating: 0xC4, count: 4096), to: volumes[2].target, at: 0)
        #expect(try RawDevice.read(4096, from: volumes[2].target, at: 0) == Data(repeating: 0xC4, count: 4096))
        // I/O on a refused volume fails; it never reaches another volume's data.
        #expect(throws: (any Error).self) { try RawDevice.write(Data(repeating: 0xEE, count: 4096), to: volumes[0].target, at: 0) }
        #expect(throws: (any Error).self) { _ = try RawDevice.read(4096, from: volumes[1].target, at: 0) }

        for volume in volumes { try await node.unpublishAndUnstage(volume) }
        #expect(try node.keeper!.heldVolumes().isEmpty)
        node.stop()
        for (index, volume) in volumes.prefix(2).enumerated() {
            let contents = try RestartedNode.contents(of: volume.id, storeDirectory: node.storeDirectory, count: Self.patternBytes)
            #expect(contents.allSatisfy { $0 == UInt8(0xA1 + index) }, "volume \(index) holds bytes it was never given")
        }
        #expect(NodeEnvironment.leftovers(under: node.directory.path).isEmpty, "\(NodeEnvironment.leftovers(under: node.directory.path))")
    }

    @Test("a keeper crash cuts volumes at the next driver restart; restaging recovers them", .timeLimit(.minutes(3)))
    func keeperCrash() async throws {
        let node = try RestartedNode(withKeeper: true)
        let id = try await node.create("block", capability: Requests.blockCapability)
        var volume = try await node.stageAndPublish(id, capability: Requests.blockCapability, pod: "pod-1")
        let writer = try PodWriter(mode: .block, path: volume.target, directory: node.directory.path, name: "before")
        #expect(writer.waitForProgress(beyond: 0))
        // The keeper dies: while the driver runs nothing changes...
        node.keeper!.kill()
        let progress = writer.completed
        #expect(writer.waitForProgress(beyond: progress) && writer.errors.isEmpty)
        // ...but the driver's restart now ends the connection.
        let keeper = try KeeperProcess(directory: node.directory.path)
        try node.restart(with: SIGKILL)
        let deadline = ContinuousClock.now + .seconds(10)
        while writer.errors.isEmpty && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(!writer.errors.isEmpty, "the running writer should have lost its volume")
        let condition = try await node.abnormality(volume)
        #expect(condition?.contains("lost") == true, "\(condition ?? "healthy")")
        _ = writer.finish()

        // The pod restarts: kubelet unpublishes, unstages, stages and publishes again.
        try await node.unpublishAndUnstage(volume)
        volume = try await node.stageAndPublish(id, capability: Requests.blockCapability, pod: "pod-2")
        #expect(try await node.abnormality(volume) == nil)
        #expect(try keeper.heldVolumes() == [id])
        let after = try PodWriter(mode: .block, path: volume.target, directory: node.directory.path, name: "after")
        #expect(after.waitForProgress(beyond: 5))
        #expect(after.finish()?.hasPrefix("V ok") == true && after.errors.isEmpty, "\(after.errors.prefix(3))")
        try await node.unpublishAndUnstage(volume)
        node.stop()
        #expect(NodeEnvironment.leftovers(under: node.directory.path).isEmpty, "\(NodeEnvironment.leftovers(under: node.directory.path))")
    }

    @Test("a keeper restarted under the driver gets the descriptors back at the next NodeGetVolumeStats", .timeLimit(.minutes(2)))
    func keeperRestartHealsAtTheNextStats() async throws {
        let node = try RestartedNode(withKeeper: true)
        let id = try await node.create("block", capability: Requests.blockCapability)
        let volume = try await node.stageAndPublish(id, capability: Requests.blockCapability, pod: "pod-1")
        let writer = try PodWriter(mode: .block, path: volume.target, directory: node.directory.path, name: "writer")
        #expect(writer.waitForProgress(beyond: 0))
        node.keeper!.kill()
        let keeper = try KeeperProcess(directory: node.directory.path)
        #expect(try keeper.heldVolumes().isEmpty)
        #expect(try await node.abnormality(volume) == nil)
        #expect(try keeper.heldVolumes() == [id])
        let progress = writer.completed
        try node.restart(with: SIGKILL)
        #expect(writer.waitForProgress(beyond: progress) && writer.errors.isEmpty, "\(writer.errors.prefix(3))")
        #expect(writer.finish()?.hasPrefix("V ok") == true)
        try await node.unpublishAndUnstage(volume)
        node.stop()
        #expect(NodeEnvironment.leftovers(under: node.directory.path).isEmpty, "\(NodeEnvironment.leftovers(under: node.directory.path))")
    }

    /// Swaps the recorded export identity (inode, generation, cookie) of two staged volumes.
    static func swapIdentities(of first: String, and second: String, registry path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard var entries = try JSONSerialization.jsonObject(with: data) as? [String: [String: Any]],
              var one = entries[first], var other = entries[second] else { throw POSIXError(.ENOENT) }
        for key in ["export", "cookie"] { (one[key], other[key]) = (other[key], one[key]) }
        entries[first] = one
        entries[second] = other
        try JSONSerialization.data(withJSONObject: entries).write(to: URL(fileURLWithPath: path))
    }
}
