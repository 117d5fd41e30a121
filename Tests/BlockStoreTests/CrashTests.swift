import Foundation
import Glibc
import StrataTestSupport
import Testing
@testable import BlockStore

/// A child process (`strata-bench crash-worker`) runs a mixed workload and is killed with
/// SIGKILL at random moments. After each kill the store is reopened: every write a completed
/// flush acknowledged reads back, nothing appears that no write put there, snapshots are exact,
/// and the catalog and the files agree, whether the reopen plays the same boot or a reboot.
/// STRATA_LONG=1 kills ten times as often.
@Suite(.serialized, .blockingTolerant) struct CrashTests {
    static let kills = ProcessInfo.processInfo.environment["STRATA_KILLS"].flatMap { Int($0) } ?? (ProcessInfo.processInfo.environment["STRATA_LONG"] == "1" ? 2000 : 200)
    /// Kills between fresh directories; in between the worker continues on what survived.
    static let killsPerDirectory = 25

    /// The strata-bench executable built next to this test bundle (or STRATA_BENCH).
    static func benchExecutable() throws -> String {
        if let path = ProcessInfo.processInfo.environment["STRATA_BENCH"] { return path }
        guard let path = BuildProducts.path(of: "strata-bench") else {
            throw CrashModel.Failure(description: "strata-bench not found beside the test bundle; build it (swift build) or set STRATA_BENCH")
        }
        return path
    }

    /// Waits until the worker journaled that its workload started (or it died, or 10 s passed).
    static func waitForWorkload(_ journalPath: String, _ process: Process) {
        var info = stat()
        for _ in 0..<10_000 {
            if stat(journalPath, &info) == 0 && info.st_size > 0 { return }
            if !process.isRunning { return }
            usleep(1000)
        }
    }

    /// Copies a failed run's directory (store, every worker's journal and stderr since the
    /// directory was fresh) where it outlives the test, so the failure can be replayed.
    static func keepForInspection(_ path: String) -> String {
        let kept = "/tmp/strata-crash-kept-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.copyItem(atPath: path, toPath: kept)
            return kept
        } catch {
            return "nowhere (\(error))"
        }
    }

    @Test func acknowledgedWritesSurviveSIGKILL() throws {
        let executable = try Self.benchExecutable()
        var generator = SeededGenerator(seed: 0x5EED_C7A5)
        var directory = try TemporaryDirectory(.fast, label: "strata-crash")
        var model = CrashModel()
        var verifiedVolumes = 0
        var acknowledgedFlushes = 0
        for kill in 0..<Self.kills {
            if kill > 0 && kill % Self.killsPerDirectory == 0 {
                acknowledgedFlushes += model.acknowledgedFlushes
                directory = try TemporaryDirectory(.fast, label: "strata-crash")
                model = CrashModel()
            }
            let storePath = directory.path + "/store"
            let journalPath = directory.path + "/journal-\(kill)"
            let errorPath = directory.path + "/stderr-\(kill)"
            _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["crash-worker", "--dir", storePath, "--seed", String(generator.next() >> 16), "--journal", journalPath]
            // Every other worker marks its maps dirty in a fake boot: reopening here then plays a
            // reboot (unmapped data punched); the others are reopened in their own boot (unmapped
            // whole subclusters adopted). Both must satisfy the model: each byte durable or new.
            if kill % 2 == 1 {
                var environment = ProcessInfo.processInfo.environment
                environment["STRATA_TEST_BOOT_ID"] = "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"
                process.environment = environment
            }
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            // One kill in five lands anywhere, open and reconcile included; the others once the
            // workload runs.
            if Int.random(in: 0..<5, using: &generator) == 0 {
                usleep(UInt32.random(in: 1_000...80_000, using: &generator))
            } else {
                Self.waitForWorkload(journalPath, process)
                usleep(UInt32.random(in: 1_000...100_000, using: &generator))
            }
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let errors = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            guard process.terminationReason == .uncaughtSignal, process.terminationStatus == SIGKILL else {
                Issue.record("kill \(kill): the worker stopped by itself (status \(process.terminationStatus)): \(errors)")
                return
            }
            let journal = (try? String(contentsOfFile: journalPath, encoding: .utf8)) ?? ""
            do {
                try model.apply(journal: journal)
                // The store as the kill left it, so a failure can be replayed from it.
                let asKilled = directory.path + "/store-as-killed"
                try? FileManager.default.removeItem(atPath: asKilled)
                if FileManager.default.fileExists(atPath: storePath) { try FileManager.default.copyItem(atPath: storePath, toPath: asKilled) }
                let store = try BlockStore(directory: storePath, options: testOptions())
                defer { store.close() }
                let report = try store.checkConsistency()
                guard report.isClean else { throw CrashModel.Failure(description: "after reopen: \(report)") }
                try model.verifyAndAdopt(store)
                verifiedVolumes += model.volumes.count
                let after = try store.checkConsistency()
                guard after.isClean else { throw CrashModel.Failure(description: "after verification: \(after)") }
            } catch {
                let kept = Self.keepForInspection(directory.path)
                Issue.record("kill \(kill) (reopened \(kill % 2 == 1 ? "as after a reboot" : "in the same boot")) in \(directory.path), kept in \(kept): \(error)")
                return
            }
        }
        // The workload did real work: flushes were acknowledged and volumes checked.
        acknowledgedFlushes += model.acknowledgedFlushes
        #expect(acknowledgedFlushes > Self.kills)
        #expect(verifiedVolumes > Self.kills)
    }
}
