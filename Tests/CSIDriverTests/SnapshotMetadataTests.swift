import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import Peering
import StrataTestSupport
import Testing

/// CSI SnapshotMetadata over the real socket, against what the snapshots hold: bytes written,
/// overwritten and discarded through a staged block device, a flatten and an expansion between
/// snapshots, and every answer compared with a byte-by-byte comparison of the snapshots read
/// through clones, at 4 KiB (the subcluster size of the default 64 KiB clusters).
@Suite("SnapshotMetadata: allocated and changed blocks", .serialized, .blockingTolerant)
struct SnapshotMetadataTests {
    static let block = 4096
    static let mebibyte = 1 << 20

    /// Bytes that are never zero and differ at every position from those of another seed.
    static func bytes(_ count: Int, seed: Int) -> Data {
        Data((0..<count).map { UInt8(1 + ($0 &* 131 &+ seed * 7) % 255) })
    }

    @Test("Allocated and delta answers match the snapshots' contents across copy-up, discard, flatten and expansion",
          .enabled(if: NodeEnvironment.available))
    func answersMatchContents() async throws {
        let directory = try TemporaryDirectory()
        try await InProcessDriver.with(mode: .all, directory: directory) { driver in
            var request = Requests.createVolume("disk", bytes: 8 << 20)
            request.volumeCapabilities = [Requests.blockCapability]
            let volume = KubeletVolume(driver: driver, volumeID: try await driver.controller.createVolume(request).volume.volumeID,
                                       capability: Requests.blockCapability)
            try await volume.stage()
            let device = try await volume.publish("backup-source")
            let mib = Int64(Self.mebibyte)
            func snapshot(_ name: String) async throws -> String {
                try await driver.controller.createSnapshot(Requests.createSnapshot(name, of: volume.volumeID)).snapshot.snapshotID
            }

            // Whole clusters into fresh space; partial writes only into inherited clusters (4 KiB copy-up).
            try RawDevice.write(Self.bytes(128 << 10, seed: 1), to: device, at: 0)
            try RawDevice.write(Self.bytes(64 << 10, seed: 2), to: device, at: mib)
            try RawDevice.write(Self.bytes(64 << 10, seed: 3), to: device, at: 3 * mib)
            let s1 = try await snapshot("s1")

            try RawDevice.write(Self.bytes(4096, seed: 4), to: device, at: 8192)
            try RawDevice.write(Self.bytes(64 << 10, seed: 5), to: device, at: mib)
            try discardRange(of: device, at: UInt64(3 * mib), length: 64 << 10)
            try RawDevice.write(Self.bytes(128 << 10, seed: 6), to: device, at: 5 * mib)
            let s2 = try await snapshot("s2")

            // A flatten copies everything up: none of it is a change. A 4 KiB write into a copied
            // cluster is one, and so is a discard at the bottom of the detached chain.
            let store = try driver.store
            try await BlockingWork.run { try store.flatten(volumeID: volume.volumeID) }
            try RawDevice.write(Self.bytes(4096, seed: 7), to: device, at: 65536 + 4096)
            try RawDevice.write(Self.bytes(64 << 10, seed: 8), to: device, at: 6 * mib)
            try discardRange(of: device, at: UInt64(mib), length: 64 << 10)
            let s3 = try await snapshot("s3")

            _ = try await driver.node.nodeExpandVolume(.with {
                $0.volumeID = volume.volumeID
                $0.volumePath = device
                $0.capacityRange = .with { $0.requiredBytes = 12 << 20 }
            })
            try RawDevice.write(Self.bytes(64 << 10, seed: 9), to: device, at: 10 * mib)
            try RawDevice.write(Self.bytes(4096, seed: 10), to: device, at: 12288)
            let s4 = try await snapshot("s4")

            // A clone of s2 and a snapshot of it: deltas from s1 and s2 reach it through its chain.
            let clone = try await driver.controller.createVolume(Requests.createVolume("clone", bytes: 8 << 20, snapshot: s2)).volume
            try write(Self.bytes(64 << 10, seed: 11), to: clone.volumeID, at: UInt64(2 * mib), store: store)
            let k1 = try await driver.controller.createSnapshot(Requests.createSnapshot("k1", of: clone.volumeID)).snapshot.snapshotID

            var contents: [String: Data] = [:]
            for (name, id) in [("s1", s1), ("s2", s2), ("s3", s3), ("s4", s4), ("k1", k1)] {
                let size = Int(try store.snapshot(id: id).size)
                let probe = try await driver.controller.createVolume(Requests.createVolume("probe-\(name)", bytes: Int64(size), snapshot: id)).volume
                contents[id] = try read(size, from: probe.volumeID, at: 0, store: store)
            }
            func blockRuns(_ data: Data, _ differs: (Range<Int>) -> Bool) -> [ClosedExtent] {
                runs(blocks: data.count / Self.block, block: Self.block) { differs($0 * Self.block..<($0 + 1) * Self.block) }
            }

            for id in [s1, s2, s3, s4, k1] {
                let data = contents[id]!
                let answer = try await driver.allocated(id)
                #expect(answer.types == [.variableLength] && answer.capacities == [Int64(data.count)])
                let expected = blockRuns(data) { range in data[range].contains { $0 != 0 } }
                #expect(answer.extents == expected, "allocated \(id)")
            }
            let pairs = [(s1, s2), (s2, s3), (s1, s3), (s3, s4), (s2, s4), (s1, s4), (s1, k1), (s2, k1)]
            for (base, target) in pairs {
                let old = contents[base]!, new = contents[target]!
                let answer = try await driver.delta(from: base, to: target)
                #expect(answer.types == [.variableLength] && answer.capacities == [Int64(new.count)])
                let expected = blockRuns(new) { range in
                    range.lowerBound >= old.count ? new[range].contains { $0 != 0 } : old[range] != new[range]
                }
                #expect(answer.extents == expected, "delta \(base) → \(target)")
                #expect(!expected.isEmpty)
            }

            // Unrelated chains and the wrong order are refused.
            #expect(await statusCode { try await driver.delta(from: s3, to: k1) } == .failedPrecondition)
            #expect(await statusCode { try await driver.delta(from: s4, to: s1) } == .failedPrecondition)

            try await paginationGivesTheSameSet(driver, full: try await driver.delta(from: s1, to: s4)) {
                try await driver.delta(from: s1, to: s4, from: $0, maxResults: $1)
            }
            try await paginationGivesTheSameSet(driver, full: try await driver.allocated(s4)) {
                try await driver.allocated(s4, from: $0, maxResults: $1)
            }
            try await volume.unpublish("backup-source")
            try await volume.unstage()
        }
        #expect(NodeEnvironment.leftovers(under: directory.path).isEmpty)
    }

    /// max_results 1 gives one extent per message and the same extents; a call resumed at the end
    /// of any extent gives the rest; an unaligned offset is rounded down to 4 KiB and cuts the extent there.
    func paginationGivesTheSameSet(_ driver: InProcessDriver, full: MetadataStream,
                                   _ call: (Int64, Int32) async throws -> MetadataStream) async throws {
        #expect(full.extents.count >= 3)
        let single = try await call(0, 1)
        #expect(single.extents == full.extents && single.messageSizes.allSatisfy { $0 == 1 })
        for (index, extent) in full.extents.enumerated() where extent.end < full.capacities.first! {
            #expect(try await call(extent.end, 2).extents == Array(full.extents[(index + 1)...]))
            guard extent.length > 8192 else { continue }
            let cut = try await call(extent.offset + 5000, 0).extents
            #expect(cut.first == ClosedExtent(offset: extent.offset + 4096, length: extent.length - 4096))
            #expect(Array(cut.dropFirst()) == Array(full.extents[(index + 1)...]))
        }
    }

    @Test("Bad requests get the spec's codes; the capability is advertised only by the current profile")
    func badRequests() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("v", bytes: 1 << 20)).volume
            try write(Self.bytes(8192, seed: 1), to: volume.volumeID, at: 0, store: driver.store)
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("s", of: volume.volumeID)).snapshot.snapshotID
            let later = try await driver.controller.createSnapshot(Requests.createSnapshot("t", of: volume.volumeID)).snapshot.snapshotID
            let other = try await driver.controller.createVolume(Requests.createVolume("w", bytes: 1 << 20)).volume
            let unrelated = try await driver.controller.createSnapshot(Requests.createSnapshot("u", of: other.volumeID)).snapshot.snapshotID
            let unknown = "snap-00000000-0000-4000-8000-000000000000"

            #expect(await statusCode { try await driver.allocated("") } == .invalidArgument)
            #expect(await statusCode { try await driver.allocated(snapshot, from: -1) } == .invalidArgument)
            #expect(await statusCode { try await driver.allocated(snapshot, maxResults: -1) } == .invalidArgument)
            #expect(await statusCode { try await driver.allocated(String(repeating: "x", count: 200)) } == .invalidArgument)
            #expect(await statusCode { try await driver.allocated(unknown) } == .notFound)
            #expect(await statusCode { try await driver.allocated("not-a-snapshot") } == .notFound)
            #expect(await statusCode { try await driver.allocated(volume.volumeID) } == .notFound)
            #expect(await statusCode { try await driver.allocated(snapshot, from: 1 << 20) } == .outOfRange)
            #expect(try await driver.allocated(snapshot, from: (1 << 20) - 1).extents.isEmpty)

            #expect(await statusCode { try await driver.delta(from: "", to: later) } == .invalidArgument)
            #expect(await statusCode { try await driver.delta(from: snapshot, to: "") } == .invalidArgument)
            #expect(await statusCode { try await driver.delta(from: snapshot, to: later, from: -4096) } == .invalidArgument)
            #expect(await statusCode { try await driver.delta(from: snapshot, to: later, maxResults: -5) } == .invalidArgument)
            #expect(await statusCode { try await driver.delta(from: unknown, to: later) } == .notFound)
            #expect(await statusCode { try await driver.delta(from: snapshot, to: unknown) } == .notFound)
            #expect(await statusCode { try await driver.delta(from: snapshot, to: later, from: 1 << 30) } == .outOfRange)
            #expect(await statusCode { try await driver.delta(from: unrelated, to: later) } == .failedPrecondition)
            #expect(await statusCode { try await driver.delta(from: later, to: snapshot) } == .failedPrecondition)
            // Nothing changed: one message, no extents, the capacity still said.
            let nothing = try await driver.delta(from: snapshot, to: later)
            #expect(nothing.extents.isEmpty && nothing.messageSizes == [0] && nothing.capacities == [1 << 20])
            #expect(try await driver.allocated(snapshot).extents == [ClosedExtent(offset: 0, length: 65536)])

            let plugin = try await driver.identity.getPluginCapabilities(.init()).capabilities.map(\.service.type)
            #expect(plugin.contains(.snapshotMetadataService))
        }
        for profile in [DriverConfiguration.CapabilityProfile.csi1_10, .csi1_6] {
            try await InProcessDriver.with(configure: { $0.capabilityProfile = profile }) { driver in
                let plugin = try await driver.identity.getPluginCapabilities(.init()).capabilities.map(\.service.type)
                #expect(!plugin.contains(.snapshotMetadataService), "\(profile)")
            }
        }
    }
}
