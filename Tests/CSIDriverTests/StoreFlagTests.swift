#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import GRPCCore
import StrataTestSupport
import Testing

/// The store's policies are the operator's to set: the flags must reach the store.
@Suite("Store flags", .blockingTolerant)
struct StoreFlagTests {
    @Test("--chain-depth-hard-limit refuses the snapshot that would go past it with RESOURCE_EXHAUSTED")
    func hardChainDepthLimit() async throws {
        // Soft limit equal to the hard one: nothing is flattened behind the test's back.
        let driver = try DriverProcess.started(arguments: ["--chain-depth-soft-limit", "3", "--chain-depth-hard-limit", "3"])
        defer { driver.stop() }
        try await driver.withClient { client in
            let controller = Csi_V1_Controller.Client(wrapping: client)
            let (volume, deep) = try await Self.chainOfDepthThree(controller)
            let refused = await statusCode { try await controller.createSnapshot(Requests.createSnapshot("third", of: deep)) }
            #expect(refused == .resourceExhausted)
            // The limit is on depth, not on the number of snapshots: a shallow volume still takes one.
            #expect(await statusCode { try await controller.createSnapshot(Requests.createSnapshot("again", of: volume)) } == nil)
        }
        // With the default limits the same chain is fine.
        let unlimited = try DriverProcess.started()
        defer { unlimited.stop() }
        try await unlimited.withClient { client in
            let controller = Csi_V1_Controller.Client(wrapping: client)
            let (_, deep) = try await Self.chainOfDepthThree(controller)
            #expect(await statusCode { try await controller.createSnapshot(Requests.createSnapshot("third", of: deep)) } == nil)
        }
    }

    /// A volume (depth 2 after its snapshot), a clone of that snapshot, its snapshot, and a clone
    /// of that (depth 3): returns the first volume and the last clone.
    private static func chainOfDepthThree<Transport: ClientTransport>(
        _ controller: Csi_V1_Controller.Client<Transport>
    ) async throws -> (volume: String, deep: String) {
        let volume = try await controller.createVolume(Requests.createVolume("base")).volume.volumeID
        let first = try await controller.createSnapshot(Requests.createSnapshot("first", of: volume)).snapshot.snapshotID
        let clone = try await controller.createVolume(Requests.createVolume("clone", snapshot: first)).volume.volumeID
        let second = try await controller.createSnapshot(Requests.createSnapshot("second", of: clone)).snapshot.snapshotID
        let deep = try await controller.createVolume(Requests.createVolume("deep", snapshot: second)).volume.volumeID
        return (volume, deep)
    }

    @Test("--space-reserve-mib sizes the store's space reserve, and a restart with less shrinks or removes it")
    func spaceReserve() throws {
        let directory = try TemporaryDirectory()
        let reserve = directory.path + "/state/store/space-reserve"
        for (mebibytes, expected) in [(3, 3 << 20), (1, 1 << 20), (0, -1)] {
            let driver = try DriverProcess.started(arguments: ["--space-reserve-mib", "\(mebibytes)"], directory: directory)
            defer { driver.stop() }
            // The store opens just after the socket starts listening.
            var size = -2
            let deadline = ContinuousClock.now + .seconds(20)
            repeat {
                var info = stat()
                size = stat(reserve, &info) == 0 ? Int(info.st_size) : -1
                if size == expected { break }
                usleep(20_000)
            } while ContinuousClock.now < deadline
            #expect(size == expected, "--space-reserve-mib \(mebibytes): the reserve is \(size) bytes (-1: no file)")
        }
    }

    @Test("Contradictory limits are refused at start, with the reason")
    func contradictoryLimits() throws {
        let driver = try DriverProcess(arguments: ["--chain-depth-soft-limit", "9", "--chain-depth-hard-limit", "4"])
        let status = try driver.waitForExit()
        #expect(status != 0)
        #expect(driver.log.contains("must not exceed --chain-depth-hard-limit"), "log: \(driver.log)")
    }
}
