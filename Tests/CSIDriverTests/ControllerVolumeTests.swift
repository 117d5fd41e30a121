import BlockStore
@testable import CSIDriver
import CSIProto
import GRPCCore
import StrataTestSupport
import Testing

@Suite("Controller: volumes", .blockingTolerant)
struct ControllerVolumeTests {
    @Test("Capabilities list exactly what is implemented")
    func capabilities() async throws {
        try await InProcessDriver.with { driver in
            let types = Set(try await driver.controller.controllerGetCapabilities(.init()).capabilities.map(\.rpc.type))
            #expect(types == [.createDeleteVolume, .createDeleteSnapshot, .listSnapshots, .listVolumes, .cloneVolume,
                              .expandVolume, .getCapacity, .getVolume, .volumeCondition, .singleNodeMultiWriter, .getSnapshot])
            let plugin = try await driver.identity.getPluginCapabilities(.init()).capabilities.map(\.service.type)
            #expect(plugin.contains(.controllerService) && plugin.contains(.volumeAccessibilityConstraints))
        }
        for (profile, groupController) in [(DriverConfiguration.CapabilityProfile.csi1_10, true), (.csi1_6, false)] {
            try await InProcessDriver.with(configure: { $0.capabilityProfile = profile }) { driver in
                let types = try await driver.controller.controllerGetCapabilities(.init()).capabilities.map(\.rpc.type)
                #expect(!types.contains(.getSnapshot) && types.contains(.createDeleteSnapshot), "\(profile)")
                let plugin = try await driver.identity.getPluginCapabilities(.init()).capabilities.map(\.service.type)
                #expect(plugin.contains(.groupControllerService) == groupController, "\(profile)")
            }
        }
        try await InProcessDriver.with(configure: { $0.controllerExpansion = false }) { driver in
            let types = try await driver.controller.controllerGetCapabilities(.init()).capabilities.map(\.rpc.type)
            #expect(!types.contains(.expandVolume) && types.contains(.createDeleteVolume))
        }
    }

    @Test("A blank volume gets the requested size, page-aligned, on this node")
    func createBlank() async throws {
        try await InProcessDriver.with { driver in
            let response = try await driver.controller.createVolume(Requests.createVolume("pvc-a", bytes: 10_000_001))
            #expect(response.volume.capacityBytes == 10_002_432)
            #expect(response.volume.accessibleTopology.first?.segments[DriverConfiguration.topologyKey] == InProcessDriver.nodeID)
            #expect(!response.volume.hasContentSource)
            let stored = try driver.store.volume(id: response.volume.volumeID)
            #expect(stored.size == 10_002_432 && stored.name == "pvc-a")
        }
    }

    @Test("Without a capacity range a volume gets 1 GiB; with only a limit, the limit")
    func defaultSizes() async throws {
        try await InProcessDriver.with { driver in
            var request = Requests.createVolume("plain")
            request.clearCapacityRange()
            let plain = try await driver.controller.createVolume(request).volume
            #expect(plain.capacityBytes == 1 << 30)
            var limited = Requests.createVolume("limited", bytes: 0, limit: 64 << 20)
            limited.capacityRange.requiredBytes = 0
            let limitedVolume = try await driver.controller.createVolume(limited).volume
            #expect(limitedVolume.capacityBytes == 64 << 20)
        }
    }

    @Test("CreateVolume is idempotent by name; a different request under the same name is ALREADY_EXISTS")
    func idempotentCreate() async throws {
        try await InProcessDriver.with { driver in
            let first = try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 8 << 20))
            let again = try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 8 << 20))
            #expect(first.volume.volumeID == again.volume.volumeID)
            // A range the existing volume satisfies is the same request as far as the spec goes.
            let wider = try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 4 << 20, limit: 16 << 20))
            #expect(wider.volume.volumeID == first.volume.volumeID)

            #expect(await statusCode { try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 32 << 20)) } == .alreadyExists)
            #expect(await statusCode {
                try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 8 << 20, parameters: ["clusterSize": "4096"]))
            } == .alreadyExists)
            #expect(await statusCode {
                try await driver.controller.createVolume(Requests.createVolume("pvc-1", bytes: 8 << 20, volume: first.volume.volumeID))
            } == .alreadyExists)
            #expect(try driver.store.listVolumes(after: nil, limit: 0).items.count == 1)
        }
    }

    @Test("Sidecar parameters are ignored, clusterSize is honoured")
    func parameters() async throws {
        try await InProcessDriver.with { driver in
            let response = try await driver.controller.createVolume(Requests.createVolume("pvc-p", parameters: [
                "clusterSize": "4096", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "vms",
            ]))
            #expect(try driver.store.volume(id: response.volume.volumeID).clusterSize == 4096)
        }
    }

    @Test("A clone of a snapshot or a volume echoes its source and is at least the source's size")
    func createFromSources() async throws {
        try await InProcessDriver.with { driver in
            let golden = try await driver.controller.createVolume(Requests.createVolume("golden", bytes: 32 << 20)).volume
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("golden-snap", of: golden.volumeID)).snapshot

            var sameSize = Requests.createVolume("vm-1", snapshot: snapshot.snapshotID)
            sameSize.clearCapacityRange()
            let clone = try await driver.controller.createVolume(sameSize).volume
            #expect(clone.capacityBytes == 32 << 20)
            #expect(clone.contentSource.snapshot.snapshotID == snapshot.snapshotID)

            // Larger than the source in the same call: external-provisioner never expands it later.
            let bigger = try await driver.controller.createVolume(Requests.createVolume("vm-2", bytes: 64 << 20, snapshot: snapshot.snapshotID)).volume
            #expect(bigger.capacityBytes == 64 << 20)

            // A smaller request without a limit still gets the whole source.
            let smaller = try await driver.controller.createVolume(Requests.createVolume("vm-3", bytes: 1 << 20, snapshot: snapshot.snapshotID)).volume
            #expect(smaller.capacityBytes == 32 << 20)

            let volumeClone = try await driver.controller.createVolume(Requests.createVolume("vm-4", bytes: 32 << 20, volume: golden.volumeID)).volume
            #expect(volumeClone.contentSource.volume.volumeID == golden.volumeID)
        }
    }

    @Test("Delete is idempotent and works while snapshots and clones of the volume exist")
    func deleteVolume() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("doomed")).volume
            let snapshot = try await driver.controller.createSnapshot(Requests.createSnapshot("kept", of: volume.volumeID)).snapshot
            _ = try await driver.controller.createVolume(Requests.createVolume("child", volume: volume.volumeID))
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID })
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID })
            #expect(await statusCode { try await driver.controller.controllerGetVolume(.with { $0.volumeID = volume.volumeID }) } == .notFound)
            // The snapshot outlives its source and can still be cloned.
            _ = try await driver.controller.createVolume(Requests.createVolume("from-kept", snapshot: snapshot.snapshotID))
            #expect(try driver.store.checkConsistency().isClean)
        }
    }

    @Test("A staged (open) volume is not deleted: FAILED_PRECONDITION")
    func deleteOpenVolume() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("busy")).volume
            let handle = try driver.store.open(volumeID: volume.volumeID)
            #expect(await statusCode { try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID }) } == .failedPrecondition)
            try handle.close()
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID })
        }
    }

    @Test("Expansion grows to the exact page-aligned size, online or offline, and never shrinks")
    func expand() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("grow", bytes: 8 << 20)).volume
            let offline = try await driver.controller.controllerExpandVolume(.with {
                $0.volumeID = volume.volumeID
                $0.capacityRange = .with { $0.requiredBytes = 12 << 20 }
            })
            #expect(offline.capacityBytes == 12 << 20 && offline.nodeExpansionRequired)

            let handle = try driver.store.open(volumeID: volume.volumeID)
            let online = try await driver.controller.controllerExpandVolume(.with {
                $0.volumeID = volume.volumeID
                $0.capacityRange = .with { $0.requiredBytes = 20 << 20 }
            })
            #expect(online.capacityBytes == 20 << 20)
            #expect(handle.size == 20 << 20)
            try handle.close()

            // Asking for less keeps the size; a limit below it is OUT_OF_RANGE.
            let smaller = try await driver.controller.controllerExpandVolume(.with {
                $0.volumeID = volume.volumeID
                $0.capacityRange = .with { $0.requiredBytes = 4 << 20 }
            })
            #expect(smaller.capacityBytes == 20 << 20)
            #expect(await statusCode {
                try await driver.controller.controllerExpandVolume(.with {
                    $0.volumeID = volume.volumeID
                    $0.capacityRange = .with { $0.requiredBytes = 4 << 20; $0.limitBytes = 4 << 20 }
                })
            } == .outOfRange)
        }
    }

    @Test("No attach step: ControllerPublish/Unpublish are UNIMPLEMENTED and nothing waits for them")
    func noAttachStep() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("unattached")).volume
            let publish = Csi_V1_ControllerPublishVolumeRequest.with {
                $0.volumeID = volume.volumeID
                $0.nodeID = InProcessDriver.nodeID
                $0.volumeCapability = Requests.mountCapability
            }
            #expect(await statusCode { try await driver.controller.controllerPublishVolume(publish) } == .unimplemented)
            let unpublish = Csi_V1_ControllerUnpublishVolumeRequest.with { $0.volumeID = volume.volumeID; $0.nodeID = InProcessDriver.nodeID }
            #expect(await statusCode { try await driver.controller.controllerUnpublishVolume(unpublish) } == .unimplemented)

            let listed = try await driver.controller.listVolumes(.init()).entries.first { $0.volume.volumeID == volume.volumeID }
            #expect(listed?.status.publishedNodeIds == [])
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = volume.volumeID })
        }
    }

    @Test("ListVolumes pages with max_entries and tokens, and sees every volume exactly once")
    func listVolumesPagination() async throws {
        try await InProcessDriver.with { driver in
            var created: Set<String> = []
            for index in 0..<7 {
                created.insert(try await driver.controller.createVolume(Requests.createVolume("list-\(index)")).volume.volumeID)
            }
            var seen: [String] = []
            var token = ""
            var pages = 0
            repeat {
                let page = try await driver.controller.listVolumes(.with { $0.maxEntries = 3; $0.startingToken = token })
                #expect(page.entries.count <= 3)
                seen += page.entries.map(\.volume.volumeID)
                #expect(page.entries.allSatisfy { $0.status.hasVolumeCondition && !$0.status.volumeCondition.abnormal })
                token = page.nextToken
                pages += 1
            } while !token.isEmpty
            #expect(pages == 3)
            #expect(seen.count == 7 && Set(seen) == created)
            let all = try await driver.controller.listVolumes(.init())
            #expect(all.entries.count == 7 && all.nextToken.isEmpty)
        }
    }

    @Test("ControllerGetVolume, ValidateVolumeCapabilities and GetCapacity describe the volume and pool")
    func inspection() async throws {
        try await InProcessDriver.with { driver in
            let volume = try await driver.controller.createVolume(Requests.createVolume("inspect")).volume
            let got = try await driver.controller.controllerGetVolume(.with { $0.volumeID = volume.volumeID })
            #expect(got.volume.volumeID == volume.volumeID && got.volume.capacityBytes == volume.capacityBytes)
            #expect(got.status.hasVolumeCondition && !got.status.volumeCondition.abnormal)

            let confirmed = try await driver.controller.validateVolumeCapabilities(.with {
                $0.volumeID = volume.volumeID
                $0.volumeCapabilities = [Requests.blockCapability, Requests.mountCapability]
            })
            #expect(confirmed.hasConfirmed && confirmed.confirmed.volumeCapabilities.count == 2)
            let refused = try await driver.controller.validateVolumeCapabilities(.with {
                $0.volumeID = volume.volumeID
                $0.volumeCapabilities = [.with { $0.block = .init(); $0.accessMode = .with { $0.mode = .multiNodeMultiWriter } }]
            })
            #expect(!refused.hasConfirmed && !refused.message.isEmpty)

            let capacity = try await driver.controller.getCapacity(.init())
            let pool = try driver.store.capacity()
            #expect(capacity.availableCapacity > 0 && UInt64(capacity.availableCapacity) <= pool.totalBytes)
            let elsewhere = try await driver.controller.getCapacity(.with {
                $0.accessibleTopology = .with { $0.segments = [DriverConfiguration.topologyKey: "other-node"] }
            })
            #expect(elsewhere.availableCapacity == 0)
        }
    }

    @Test("Operations on the same id while one is running get ABORTED; other ids proceed")
    func sameIDIsAborted() async throws {
        try await InProcessDriver.with { driver in
            let first = try await driver.controller.createVolume(Requests.createVolume("one")).volume
            let second = try await driver.controller.createVolume(Requests.createVolume("two")).volume
            let (holding, release) = AsyncStream<Void>.makeStream()
            let (held, markHeld) = AsyncStream<Void>.makeStream()
            let blocker = Task {
                try await driver.server.context.locks.withLocks([LockKey.volume(first.volumeID)]) {
                    markHeld.yield()
                    for await _ in holding { break }
                }
            }
            for await _ in held { break }
            #expect(await statusCode { try await driver.controller.deleteVolume(.with { $0.volumeID = first.volumeID }) } == .aborted)
            #expect(await statusCode {
                try await driver.controller.controllerExpandVolume(.with { $0.volumeID = first.volumeID; $0.capacityRange = .with { $0.requiredBytes = 1 << 30 } })
            } == .aborted)
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = second.volumeID })
            release.yield()
            try await blocker.value
            _ = try await driver.controller.deleteVolume(.with { $0.volumeID = first.volumeID })
            #expect(driver.server.context.locks.heldCount == 0)
        }
    }
}
