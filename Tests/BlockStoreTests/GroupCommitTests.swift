import Foundation
import GRDB
import StrataTestSupport
import Synchronization
import Testing
@testable import BlockStore

/// Creations that arrive together share a transaction; each still succeeds or fails on its own,
/// and a success is reported only once it is committed.
@Suite(.blockingTolerant) struct GroupCommitTests {
    @Test("changes queued behind a commit go together, in groups of at most largestGroup; a failing one is rolled back alone")
    func grouping() throws {
        let database = try DatabaseQueue()
        try database.write { try $0.execute(sql: "CREATE TABLE items (id INTEGER PRIMARY KEY)") }
        let committer = GroupCommit<Int>(largestGroup: 8)
        let groupSizes = Mutex<[Int]>([])
        let firstCommitMayEnd = DispatchSemaphore(value: 0)
        let commitGroup: @Sendable ([GroupCommit<Int>.Ticket]) throws -> Void = { group in
            let isFirst = groupSizes.withLock { sizes -> Bool in
                sizes.append(group.count)
                return sizes.count == 1
            }
            if isFirst { firstCommitMayEnd.wait() }
            try database.write { db in
                for ticket in group { try GroupCommit.runInSavepoint(ticket, db) }
            }
        }
        struct Refused: Error {}
        let insert: @Sendable (Int) throws -> Int = { item in
            try committer.perform({ db in
                try db.execute(sql: "INSERT INTO items (id) VALUES (?)", arguments: [item])
                if item == 7 { throw Refused() }
                return item
            }, commitGroup: commitGroup)
        }

        let outcomes = Mutex<[Int: Bool]>([:])
        let done = DispatchGroup()
        // Item 0 finds nobody committing: it commits alone, and is held there.
        onThread(in: done) {
            let value = try? insert(0)
            outcomes.withLock { $0[0] = value == 0 }
        }
        while groupSizes.withLock({ $0.count }) == 0 { usleep(1000) }
        // 20 more queue up behind it.
        for item in 1...20 {
            onThread(in: done) {
                let value = try? insert(item)
                outcomes.withLock { $0[item] = value == item }
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while committer.queuedCount < 20, Date() < deadline { usleep(1000) }
        #expect(committer.queuedCount == 20)
        firstCommitMayEnd.signal()
        done.wait()

        #expect(groupSizes.withLock { $0 } == [1, 8, 8, 4])
        let succeeded = outcomes.withLock { $0 }
        #expect(succeeded.count == 21)
        #expect(succeeded.filter { !$0.value }.map(\.key) == [7], "only the change that threw fails")
        let stored = try database.read { try Int.fetchAll($0, sql: "SELECT id FROM items ORDER BY id") }
        #expect(stored == Array(0...20).filter { $0 != 7 }, "the failed change's insert is rolled back, its group's others kept")
    }

    @Test("a failed commit fails every change of its group, and the next group still commits")
    func failedCommit() throws {
        let committer = GroupCommit<Int>()
        struct DiskFull: Error {}
        let attempts = Atomic<Int>(0)
        #expect(throws: DiskFull.self) {
            try committer.perform({ _ in 1 }, commitGroup: { _ in
                attempts.add(1, ordering: .relaxed)
                throw DiskFull()
            })
        }
        let database = try DatabaseQueue()
        let value = try committer.perform({ _ in 2 }, commitGroup: { group in
            try database.write { db in for ticket in group { try GroupCommit.runInSavepoint(ticket, db) } }
        })
        #expect(value == 2 && attempts.load(ordering: .relaxed) == 1)
    }

    @Test("concurrent creations: clones, blanks, repeats, conflicts and missing snapshots each get their own answer, and all of it survives a reopen")
    func concurrentCreations() throws {
        let directory = try TemporaryDirectory(.disk)
        var clones: [String: String] = [:]
        do {
            let store = try BlockStore(directory: directory.path, options: testOptions())
            let golden = try store.createVolume(name: "golden", size: 1 << 20, clusterSize: 65536)
            let handle = try store.open(volumeID: golden.id)
            try handle.write(pattern(seed: 1, count: 1 << 20), at: 0)
            try handle.close()
            let snapshot = try store.createSnapshot(name: "golden-snap", of: golden.id)
            // Taken before the concurrent requests: a request for this name with another size
            // conflicts whatever the threads' order (a name first taken by a racing request
            // could go to the blank one instead).
            let taken = try store.createVolume(name: "taken", size: 1 << 20, source: .snapshot(id: snapshot.id))

            let results = Mutex<[Int: Result<Volume, StoreError>]>([:])
            let done = DispatchGroup()
            for index in 0..<48 { onThread(in: done) {
                let outcome: Result<Volume, StoreError>
                do {
                    switch index % 6 {
                    case 0, 1, 2:  // a clone of its own
                        outcome = .success(try store.createVolume(name: "clone-\(index)", size: 1 << 20, source: .snapshot(id: snapshot.id)))
                    case 3:  // the same clone asked for by many callers at once
                        outcome = .success(try store.createVolume(name: "shared", size: 1 << 20, source: .snapshot(id: snapshot.id)))
                    case 4:  // a blank volume, or a name taken with another size
                        outcome = .success(try store.createVolume(name: index % 12 == 4 ? "blank-\(index)" : "taken", size: 2 << 20))
                    default:  // a snapshot that does not exist
                        outcome = .success(try store.createVolume(name: "orphan-\(index)", size: 1 << 20, source: .snapshot(id: "snap-00000000-0000-4000-8000-000000000000")))
                    }
                } catch let error as StoreError {
                    outcome = .failure(error)
                } catch {
                    outcome = .failure(StoreError(.io, "not a StoreError: \(error)"))
                }
                results.withLock { $0[index] = outcome }
            } }
            done.wait()
            let outcomes = results.withLock { $0 }
            for (index, outcome) in outcomes {
                switch (index % 6, outcome) {
                case (0, .success(let volume)), (1, .success(let volume)), (2, .success(let volume)):
                    clones[volume.name] = volume.id
                case (3, .success(let volume)):
                    clones["shared"] = volume.id
                case (4, .success(let volume)) where index % 12 == 4:
                    #expect(volume.name == "blank-\(index)" && volume.size == 2 << 20)
                case (4, .failure(let error)) where index % 12 != 4:
                    #expect(error.code == .alreadyExists)
                case (5, .failure(let error)):
                    #expect(error.code == .notFound)
                default:
                    Issue.record("request \(index) got \(outcome)")
                }
            }
            let sharedIDs = Set(outcomes.filter { $0.key % 6 == 3 }.compactMap { try? $0.value.get().id })
            #expect(sharedIDs.count == 1, "every caller of the same creation gets the one volume")
            #expect(clones.count == 25)
            clones["taken"] = taken.id
            #expect(try store.checkConsistency().isClean)
            store.close()
        }
        // Reopened: every creation that was answered is there, and the clones read the snapshot.
        let store = try BlockStore(directory: directory.path, options: testOptions())
        defer { store.close() }
        #expect(try store.checkConsistency().isClean)
        for (name, id) in clones {
            let volume = try store.volume(id: id)
            #expect(volume.name == name)
            let handle = try store.open(volumeID: id)
            #expect(try handle.read(count: 4096, at: 65536) == Array(pattern(seed: 1, count: 1 << 20)[65536..<69632]))
            try handle.close()
        }
        #expect(try store.listVolumes(after: nil, limit: 1000).items.count == 1 + 1 + 25 + 4)
    }
}

/// Runs `body` on a thread of its own (blocking waits must not starve a shared pool).
private func onThread(in group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
    group.enter()
    Thread {
        body()
        group.leave()
    }.start()
}
