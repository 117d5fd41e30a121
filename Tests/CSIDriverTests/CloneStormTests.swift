import BlockStore
@testable import CSIDriver
import CSIProto
import Foundation
import GRPCCore
import Synchronization
import StrataTestSupport
import Testing

/// The golden-image pattern as CDI drives it: a storm of clones of one snapshot.
@Suite("Controller: clone storm", .blockingTolerant)
struct CloneStormTests {
    struct Outcome: Sendable {
        let index: Int
        let code: RPCError.Code?
        let volumeID: String?
        let issuedAfterDelete: Bool
    }

    @Test("1,000 CreateVolume from one snapshot at concurrency 32 while the snapshot and some clones are deleted")
    func storm() async throws {
        let clones = 1000
        let concurrency = 32
        try await InProcessDriver.with { driver in
            let golden = try await driver.controller.createVolume(Requests.createVolume("golden", bytes: 64 << 20)).volume
            let image = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
            try write(image, to: golden.volumeID, at: 3 << 20, store: driver.store)
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("golden-snap", of: golden.volumeID)).snapshot
            // Only the snapshot and its clones hold the golden layer from now on.
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = golden.volumeID })

            let deleteReturned = Atomic<Bool>(false)
            let completed = Atomic<Int>(0)
            // Clones made so far; some are deleted while the storm goes on.
            let made = Mutex<[String]>([])
            let deletedClones = Mutex<Set<String>>([])
            let createOne: @Sendable (Int) async throws -> Outcome? = { index in
                let issuedAfterDelete = deleteReturned.load(ordering: .acquiring)
                let request = Requests.createVolume("vm-\(index)", bytes: 64 << 20, snapshot: snapshot.snapshotID)
                var outcome = Outcome(index: index, code: nil, volumeID: nil, issuedAfterDelete: issuedAfterDelete)
                do {
                    let volume = try await driver.controller.createVolume(request).volume
                    made.withLock { $0.append(volume.volumeID) }
                    outcome = Outcome(index: index, code: nil, volumeID: volume.volumeID, issuedAfterDelete: issuedAfterDelete)
                } catch let error as RPCError {
                    outcome = Outcome(index: index, code: error.code, volumeID: nil, issuedAfterDelete: issuedAfterDelete)
                }
                let done = completed.add(1, ordering: .relaxed).newValue
                if done == clones / 2 {
                    _ = try await driver.controller.deleteSnapshot(.with { $0.snapshotID = snapshot.snapshotID })
                    deleteReturned.store(true, ordering: .releasing)
                }
                if done % 100 == 50 {
                    // Delete a few earlier clones while others are being created from the same layer.
                    let victims = made.withLock { Array($0.prefix(done / 50).suffix(3)) }
                    for victim in victims where deletedClones.withLock({ $0.insert(victim).inserted }) {
                        _ = try await driver.controller.deleteVolume(.with { $0.volumeID = victim })
                    }
                }
                return outcome
            }
            let outcomes = try await withThrowingTaskGroup(of: Outcome?.self) { group in
                var results: [Outcome] = []
                for index in 0..<concurrency { group.addTask { try await createOne(index) } }
                var next = concurrency
                while let outcome = try await group.next() {
                    if let outcome { results.append(outcome) }
                    if next < clones {
                        let index = next
                        group.addTask { try await createOne(index) }
                        next += 1
                    }
                }
                return results
            }
            let removed = deletedClones.withLock { $0 }
            #expect(removed.count >= 15)
            let created = outcomes.compactMap(\.volumeID).filter { !removed.contains($0) }
            let refused = outcomes.filter { $0.code != nil }
            #expect(refused.allSatisfy { $0.code == .notFound }, "unexpected codes: \(Set(refused.map { "\($0.code!)" }))")
            #expect(outcomes.filter(\.issuedAfterDelete).allSatisfy { $0.code == .notFound })
            #expect(outcomes.count == clones)
            #expect(created.count + removed.count >= clones / 2)
            #expect(driver.server.context.locks.heldCount == 0)

            let store = try driver.store
            for volumeID in created.shuffled().prefix(5) {
                #expect(try read(image.count, from: volumeID, at: 3 << 20, store: store) == image)
            }
            let midway = try store.checkConsistency()
            #expect(midway.isClean && midway.referenceMismatches.isEmpty, "\(midway)")
            // One head per clone plus the shared golden layer.
            #expect(try store.layerReferenceCounts().count == created.count + 1)

            // The golden layer's data is freed only when the last clone goes.
            let survivor = created.last!
            for volumeID in created.dropLast() {
                _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volumeID })
            }
            #expect(try store.layerReferenceCounts().count == 2)
            #expect(try read(image.count, from: survivor, at: 3 << 20, store: store) == image)
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = survivor })
            #expect(try store.layerReferenceCounts().isEmpty)
            let report = try store.checkConsistency()
            #expect(report.isClean, "\(report)")
        }
    }
}
