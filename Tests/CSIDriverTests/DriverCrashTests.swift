#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import BlockStore
import CSIProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import StrataTestSupport
import Testing

/// The real strata-csi under a mixed workload, killed with SIGKILL at random moments, then
/// restarted: what it acknowledged must still be true, what it did not must be finishable by
/// a retry, and nothing may leak. 100 kills here; `STRATA_LONG=1` makes it 1,000.
@Suite("Driver crash and restart", .serialized, .enabled(if: NodeEnvironment.available), .blockingTolerant)
struct DriverCrashTests {
    static var kills: Int { ProcessInfo.processInfo.environment["STRATA_LONG"] == "1" ? 1000 : 100 }

    @Test("SIGKILL during create, clone, snapshot, expand, delete and device writes loses nothing acknowledged")
    func killAndRestart() async throws {
        let directory = try TemporaryDirectory()
        let kubelet = directory.path + "/kubelet"
        let arguments = ["--kubelet-dir", kubelet, "--mode", "all"]
        var ledger = CrashLedger()
        var random = SeededGenerator(seed: 0x5747_4154_4153)

        // Fixtures that live through every crash: a golden snapshot and a published block volume.
        var driver = try DriverProcess.started(arguments: arguments, directory: directory)
        // A failed round leaves the published device staged: nothing of it may outlive the test.
        defer { NodeLeftovers.clear(under: directory.path) { driver.stop() } }
        let (goldenSnapshot, device) = try await driver.withClient { client in
            try await CrashWorkload.prepare(client: client, kubelet: kubelet)
        }
        ledger.deviceVolumeID = device.volumeID

        for round in 0..<Self.kills {
            // Run the workload for a random moment, then kill the driver in the middle of it.
            let killAfter = Duration.milliseconds(Int.random(in: 5...250, using: &random))
            let seed = random.next()
            let box = LedgerBox(ledger)
            let workload = Task { [driver] in
                try? await driver.withClient { client in
                    var generator = SeededGenerator(seed: seed)
                    await CrashWorkload.run(client: client, snapshotID: goldenSnapshot, device: device.path,
                                            ledger: &box.ledger, random: &generator)
                }
            }
            try await Task.sleep(for: killAfter)
            driver.signal(SIGKILL)
            _ = try driver.waitForExit()
            await workload.value
            ledger = box.ledger

            if round % 10 == 9 {
                // Between some rounds, look at the store itself while no driver holds it.
                let store = try BlockStore(directory: directory.path + "/state/store")
                let report = try store.checkConsistency()
                store.close()
                #expect(report.isClean, "round \(round): \(report)")
            }

            driver = try DriverProcess.started(arguments: arguments, directory: directory)
            let verified = LedgerBox(ledger)
            try await driver.withClient { client in
                try await CrashWorkload.verify(client: client, ledger: &verified.ledger, snapshotID: goldenSnapshot, device: device.path, round: round)
            }
            ledger = verified.ledger
            // One live loop device for the published volume, none left over the dead export
            // (those show their backing file as `/<volume id>`), and two mounts: export and target.
            let loops = Self.loopDevices(backing: device.volumeID)
            #expect(loops.count == 1 && loops.allSatisfy { $0.contains(directory.path) }, "round \(round): \(loops)")
            let mounts = NodeEnvironment.leftovers(under: directory.path).filter { $0.hasPrefix("mount") }
            #expect(mounts.count == 2, "round \(round): \(mounts) \(MountTableWitness.describe(mentioning: directory.path))")
            if loops.count != 1 || mounts.count != 2 { break }
        }

        print("crash test: \(Self.kills) kills, \(ledger.counter) operations issued, \(ledger.blocks.count) device blocks verified")
        #expect(ledger.counter > Self.kills, "the workload barely ran: the test would prove nothing")
        // Tear everything down through the API, then nothing of Strata may remain.
        try await driver.withClient { client in try await CrashWorkload.tearDown(client: client, device: device) }
        driver.stop()
        let store = try BlockStore(directory: directory.path + "/state/store")
        #expect(try store.listVolumes(after: nil, limit: 0).items.isEmpty)
        let report = try store.checkConsistency()
        #expect(report.isClean, "\(report)")
        #expect(try store.layerReferenceCounts().isEmpty)
        store.close()
        #expect(NodeEnvironment.leftovers(under: directory.path).isEmpty, "\(NodeEnvironment.leftovers(under: directory.path))")
    }
}

extension DriverCrashTests {
    /// Backing files of every loop device over a file named after `volumeID`.
    static func loopDevices(backing volumeID: String) -> [String] {
        NodeEnvironment.loopBackingFiles().filter { $0.backing.hasSuffix(volumeID) }.map { "\($0.device): \($0.backing)" }
    }
}

/// Hands the ledger to the one task using it at a time (the workload, then the verifier).
final class LedgerBox: @unchecked Sendable {
    var ledger: CrashLedger
    init(_ ledger: CrashLedger) { self.ledger = ledger }
}

/// What the client was told, and what it was still waiting for when the driver died.
struct CrashLedger: Sendable {
    enum Outcome: Sendable { case done, unknown }

    /// Volume name → (id once known, created size, state).
    var volumes: [String: (id: String?, size: Int64, created: Outcome)] = [:]
    var deletedVolumes: [String: (id: String, outcome: Outcome)] = [:]
    var snapshots: [String: (id: String?, sourceID: String, created: Outcome)] = [:]
    var deletedSnapshots: [String: (id: String, outcome: Outcome)] = [:]
    /// Device block → the pattern last acknowledged by fsync, and one that may or may not have landed.
    var blocks: [Int64: (acknowledged: UInt8?, inFlight: UInt8?)] = [:]
    var deviceVolumeID = ""
    var counter = 0
}

enum CrashWorkload {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>
    static let blockSize = 4096
    static let deviceBlocks: Int64 = 512

    static func prepare(client: Client, kubelet: String) async throws -> (snapshot: String, device: (volumeID: String, path: String)) {
        let controller = Csi_V1_Controller.Client(wrapping: client)
        let node = Csi_V1_Node.Client(wrapping: client)
        let golden = try await controller.createVolume(Requests.createVolume("golden", bytes: 8 << 20)).volume.volumeID
        let snapshot = try await controller.createSnapshot(Requests.createSnapshot("golden-snap", of: golden)).snapshot.snapshotID
        var request = Requests.createVolume("device", bytes: deviceBlocks * Int64(blockSize))
        request.volumeCapabilities = [Requests.blockCapability]
        let volumeID = try await controller.createVolume(request).volume.volumeID
        let staging = "\(kubelet)/plugins/staging/\(volumeID)"
        let target = "\(kubelet)/pods/writer/\(volumeID)"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: kubelet + "/pods/writer", withIntermediateDirectories: true)
        _ = try await node.nodeStageVolume(.with {
            $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.volumeCapability = Requests.blockCapability
        })
        _ = try await node.nodePublishVolume(.with {
            $0.volumeID = volumeID; $0.stagingTargetPath = staging; $0.targetPath = target; $0.volumeCapability = Requests.blockCapability
        })
        return (snapshot, (volumeID, target))
    }

    /// Random operations until the driver dies under them.
    static func run(client: Client, snapshotID: String, device: String, ledger: inout CrashLedger, random: inout SeededGenerator) async {
        let controller = Csi_V1_Controller.Client(wrapping: client)
        while true {
            ledger.counter += 1
            let n = ledger.counter
            do {
                switch Int.random(in: 0..<6, using: &random) {
                case 0, 1:
                    let name = "clone-\(n)"
                    ledger.volumes[name] = (nil, 8 << 20, .unknown)
                    let id = try await controller.createVolume(Requests.createVolume(name, bytes: 8 << 20, snapshot: snapshotID)).volume.volumeID
                    ledger.volumes[name] = (id, 8 << 20, .done)
                case 2:
                    guard let volume = ledger.volumes.values.filter({ $0.created == .done && $0.id != nil }).randomElement(using: &random) else { continue }
                    let snapshotName = "snap-\(n)"
                    ledger.snapshots[snapshotName] = (nil, volume.id!, .unknown)
                    let id = try await controller.createSnapshot(Requests.createSnapshot(snapshotName, of: volume.id!)).snapshot.snapshotID
                    ledger.snapshots[snapshotName] = (id, volume.id!, .done)
                case 3:
                    guard let (name, volume) = ledger.volumes.filter({ $0.value.created == .done && $0.value.id != nil }).randomElement(using: &random) else { continue }
                    let newSize = volume.size + (1 << 20)
                    _ = try await controller.controllerExpandVolume(.with {
                        $0.volumeID = volume.id!
                        $0.capacityRange = .with { $0.requiredBytes = newSize }
                    })
                    ledger.volumes[name]?.size = newSize
                case 4:
                    if Bool.random(using: &random),
                       let (name, volume) = ledger.volumes.filter({ $0.value.created == .done && $0.value.id != nil }).randomElement(using: &random) {
                        ledger.volumes[name] = nil
                        ledger.deletedVolumes[name] = (volume.id!, .unknown)
                        _ = try await controller.deleteVolume(.with { $0.volumeID = volume.id! })
                        ledger.deletedVolumes[name] = (volume.id!, .done)
                    } else if let (name, snapshot) = ledger.snapshots.filter({ $0.value.created == .done }).randomElement(using: &random) {
                        ledger.snapshots[name] = nil
                        ledger.deletedSnapshots[name] = (snapshot.id!, .unknown)
                        _ = try await controller.deleteSnapshot(.with { $0.snapshotID = snapshot.id! })
                        ledger.deletedSnapshots[name] = (snapshot.id!, .done)
                    }
                default:
                    let block = Int64.random(in: 0..<deviceBlocks, using: &random)
                    let pattern = UInt8.random(in: 1...255, using: &random)
                    ledger.blocks[block, default: (nil, nil)].inFlight = pattern
                    try RawDevice.write(Data(repeating: pattern, count: blockSize), to: device, at: block * Int64(blockSize))
                    ledger.blocks[block] = (pattern, nil)
                }
            } catch {
                return
            }
        }
    }

    /// After a restart: acknowledged work is there, unacknowledged work is finished by retrying.
    static func verify(client: Client, ledger: inout CrashLedger, snapshotID: String, device: String, round: Int) async throws {
        let identity = Csi_V1_Identity.Client(wrapping: client)
        let controller = Csi_V1_Controller.Client(wrapping: client)
        #expect(try await identity.probe(.init()).ready.value, "round \(round): not ready after restart")

        for (name, volume) in ledger.volumes {
            // Retrying a create, acknowledged or not, returns the one volume of that name.
            let id = try await controller.createVolume(Requests.createVolume(name, bytes: 8 << 20, snapshot: snapshotID)).volume.volumeID
            if let known = volume.id { #expect(id == known, "round \(round): \(name) changed id") }
            ledger.volumes[name] = (id, volume.size, .done)
            let stored = try await controller.controllerGetVolume(.with { $0.volumeID = id }).volume
            #expect(stored.capacityBytes >= (volume.created == .done ? 8 << 20 : 0), "round \(round): \(name) shrank")
        }
        for (name, deleted) in ledger.deletedVolumes {
            if deleted.outcome == .unknown { _ = try await controller.deleteVolume(.with { $0.volumeID = deleted.id }) }
            #expect(await statusCode { try await controller.controllerGetVolume(.with { $0.volumeID = deleted.id }) } == .notFound,
                    "round \(round): deleted volume \(name) is back")
            ledger.deletedVolumes[name] = nil
        }
        for (name, snapshot) in ledger.snapshots {
            let id = try await controller.createSnapshot(Requests.createSnapshot(name, of: snapshot.sourceID)).snapshot.snapshotID
            if let known = snapshot.id { #expect(id == known, "round \(round): snapshot \(name) changed id") }
            ledger.snapshots[name] = (id, snapshot.sourceID, .done)
        }
        for (name, deleted) in ledger.deletedSnapshots {
            if deleted.outcome == .unknown { _ = try await controller.deleteSnapshot(.with { $0.snapshotID = deleted.id }) }
            #expect(try await controller.listSnapshots(.with { $0.snapshotID = deleted.id }).entries.isEmpty,
                    "round \(round): deleted snapshot \(name) is back")
            ledger.deletedSnapshots[name] = nil
        }
        // Data flushed through the device reads back; a write in flight landed whole or not at all.
        for (block, state) in ledger.blocks {
            let data = try RawDevice.read(blockSize, from: device, at: block * Int64(blockSize))
            let allowed = Set([state.acknowledged ?? 0] + (state.inFlight.map { [$0] } ?? []))
            #expect(Set(data).count == 1 && allowed.contains(data.first!), "round \(round): block \(block) holds \(Set(data)), expected one of \(allowed)")
            ledger.blocks[block] = (data.first!, nil)
        }
        // Keep the model small: drop clones beyond a few dozen.
        while ledger.volumes.count > 24, let (name, volume) = ledger.volumes.first {
            for (snapshotName, snapshot) in ledger.snapshots where snapshot.sourceID == volume.id {
                _ = try await controller.deleteSnapshot(.with { $0.snapshotID = snapshot.id! })
                ledger.snapshots[snapshotName] = nil
            }
            _ = try await controller.deleteVolume(.with { $0.volumeID = volume.id! })
            ledger.volumes[name] = nil
        }
    }

    static func tearDown(client: Client, device: (volumeID: String, path: String)) async throws {
        let controller = Csi_V1_Controller.Client(wrapping: client)
        let node = Csi_V1_Node.Client(wrapping: client)
        _ = try await node.nodeUnpublishVolume(.with { $0.volumeID = device.volumeID; $0.targetPath = device.path })
        let staging = (device.path as NSString).deletingLastPathComponent.replacingOccurrences(of: "/pods/writer", with: "/plugins/staging") + "/\(device.volumeID)"
        _ = try await node.nodeUnstageVolume(.with { $0.volumeID = device.volumeID; $0.stagingTargetPath = staging })
        for snapshot in try await controller.listSnapshots(.init()).entries {
            _ = try await controller.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshot.snapshotID })
        }
        for volume in try await controller.listVolumes(.init()).entries {
            _ = try await controller.deleteVolume(.with { $0.volumeID = volume.volume.volumeID })
        }
    }
}
