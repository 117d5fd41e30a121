#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CSIProto
import Foundation
import StrataTestSupport
import Synchronization
import Testing

/// Either node of an RWX Block volume restarted (an upgrade, SIGTERM) and crashed (SIGKILL)
/// while both serve it: with the keeper, a restart is as invisible to a volume served to or from
/// another node as to a local one. Node A owns the volume and stages it (the VM's source side),
/// node B stages it too (its I/O goes to A); a writer on each node writes and fsyncs its own
/// slots while one node's driver goes down and comes back. Neither writer may see an error, and
/// afterwards each node reads every slot as its last acknowledged write.
@Suite("Restarts of either node under I/O on an RWX volume", .serialized, .enabled(if: NodeEnvironment.available && MultiNodeEnvironment.available),
       .blockingTolerant)
struct ReadWriteManyRestartTests {
    static let slotBytes = 64 << 10
    static let slotsPerNode = 64

    @Test("SIGTERM and SIGKILL of one node's driver, with its keeper: the writers on both nodes see no error and every acknowledged write reads back on both",
          arguments: ["a", "b"])
    func restartsUnderIO(restarted: String) async throws {
        // The keepers outlive the drivers: torn down after them, they let their connections go.
        let keeperDirectory = try TemporaryDirectory(label: "keeper")
        let keepers = try ["a", "b"].map { node in
            try FileManager.default.createDirectory(atPath: keeperDirectory.path + "/" + node, withIntermediateDirectories: true)
            return try KeeperProcess(directory: keeperDirectory.path + "/" + node)
        }
        defer { for keeper in keepers { keeper.kill(SIGTERM) } }
        let cluster = try PeerCluster(nodes: ["a", "b"])
        defer { cluster.tearDown() }
        let keeperFlags = ["a": ["--fuse-keeper-socket", keepers[0].socketPath], "b": ["--fuse-keeper-socket", keepers[1].socketPath]]
        try cluster.start("a", extra: keeperFlags["a"]!)
        try cluster.start("b", extra: keeperFlags["b"]!)
        let disk = try await cluster["a"].controller {
            try await $0.createVolume(ReadWriteManyTests.sharedVolume("restarted-owner"))
        }.volume.volumeID
        let deviceA = try await cluster["a"].attach(disk, capability: ReadWriteManyTests.sharedBlock)
        let deviceB = try await cluster["b"].attach(disk, capability: ReadWriteManyTests.sharedBlock)

        let writerA = SlotWriter(device: deviceA, firstOffset: 0, slots: Self.slotsPerNode, slotBytes: Self.slotBytes, seed: 1)
        let writerB = SlotWriter(device: deviceB, firstOffset: Int64(32 << 20), slots: Self.slotsPerNode, slotBytes: Self.slotBytes, seed: 2)
        defer { writerA.stop(); writerB.stop() }
        #expect(writerA.waitForProgress(beyond: 0) && writerB.waitForProgress(beyond: 0), "the writers never started")

        var random = SeededGenerator(seed: 0x0DD5_EED5)
        for (round, signal) in Array(repeating: [SIGTERM, SIGKILL], count: 4).joined().enumerated() {
            usleep(UInt32.random(in: 0...300_000, using: &random))
            let before = (writerA.completed, writerB.completed)
            if signal == SIGTERM { cluster[restarted].stop() } else { cluster[restarted].kill() }
            try cluster.start(restarted, extra: keeperFlags[restarted]!)
            let flowing = writerA.waitForProgress(beyond: before.0 + 3) && writerB.waitForProgress(beyond: before.1 + 3)
            #expect(flowing, "round \(round) (signal \(signal)): I/O did not resume on both nodes")
            #expect(writerA.errors.isEmpty && writerB.errors.isEmpty,
                    "round \(round) (signal \(signal)): A \(writerA.errors.prefix(3)), B \(writerB.errors.prefix(3))\n\(cluster.complaints())")
            if !flowing || !writerA.errors.isEmpty || !writerB.errors.isEmpty { break }
        }
        writerA.stop()
        writerB.stop()
        #expect(writerA.errors.isEmpty && writerB.errors.isEmpty, "A \(writerA.errors.prefix(3)), B \(writerB.errors.prefix(3))")
        print("restarts of node \(restarted): \(writerA.completed) writes on A, \(writerB.completed) on B, longest wait \(max(writerA.longestWait, writerB.longestWait)) s")

        // Each node reads every slot of both writers as its last acknowledged write.
        for device in [deviceA, deviceB] {
            try ReadWriteManyTests.dropCache(device)
            for writer in [writerA, writerB] {
                for (offset, expected) in writer.lastWrites {
                    let read = try RawDevice.read(expected.count, from: device, at: offset)
                    #expect(read == expected, "\(device == deviceA ? "A" : "B") reads the slot at \(offset) as something else than its last write")
                }
            }
        }

        try await cluster["b"].detach(disk)
        try await cluster["a"].detach(disk)
        for keeper in keepers { #expect(try keeper.heldVolumes().isEmpty, "a keeper still holds descriptors after both nodes unstaged") }
        _ = try await cluster["a"].controller { try await $0.deleteVolume(.with { $0.volumeID = disk }) }
    }
}

/// Writes `slots` slots of a device in turn, each write a fresh pattern followed by fsync, on a
/// thread of its own until stopped; remembers each slot's last acknowledged bytes and any error.
final class SlotWriter: @unchecked Sendable {
    private struct State {
        var completed = 0
        var errors: [String] = []
        var lastWrites: [Int64: Data] = [:]
        var longestWait = 0.0
    }

    private let state = Mutex(State())
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    init(device: String, firstOffset: Int64, slots: Int, slotBytes: Int, seed: UInt64) {
        Thread.detachNewThread { [self] in
            var sequence: UInt64 = 0
            while !stopping.load(ordering: .acquiring) {
                let offset = firstOffset + Int64(Int(sequence) % slots * slotBytes)
                let data = MultiNode.pattern(seed: seed << 32 | sequence, count: slotBytes)
                let started = ContinuousClock.now
                do {
                    try RawDevice.write(data, to: device, at: offset)
                    let waited = started.duration(to: .now)
                    let seconds = Double(waited.components.seconds) + Double(waited.components.attoseconds) / 1e18
                    state.withLock { state in
                        state.completed += 1
                        state.lastWrites[offset] = data
                        state.longestWait = max(state.longestWait, seconds)
                    }
                } catch {
                    // An unacknowledged write may or may not have landed: the slot is no longer known.
                    state.withLock { state in
                        state.errors.append("write at \(offset): \(error)")
                        state.lastWrites[offset] = nil
                    }
                }
                sequence += 1
            }
            finished.signal()
        }
    }

    var completed: Int { state.withLock { $0.completed } }
    var errors: [String] { state.withLock { $0.errors } }
    var lastWrites: [Int64: Data] { state.withLock { $0.lastWrites } }
    var longestWait: Double { state.withLock { $0.longestWait } }

    /// Waits up to a minute for more than `count` acknowledged writes.
    func waitForProgress(beyond count: Int) -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if completed > count { return true }
            usleep(20_000)
        }
        return false
    }

    /// Stops after the write in progress (waiting up to two minutes for it); calling it again
    /// does nothing.
    func stop() {
        if stopping.exchange(true, ordering: .acquiringAndReleasing) { return }
        if finished.wait(timeout: .now() + 120) == .timedOut { Issue.record("a write did not return within two minutes") }
    }
}
