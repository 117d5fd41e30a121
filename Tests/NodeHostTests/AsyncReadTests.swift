import Dispatch
import Foundation
import Glibc
import StrataTestSupport
import Synchronization
import Testing

@testable import NodeHost

/// A `MemoryBackend` whose reads are answered later on a queue of its own, as a remote volume's
/// are on a network event loop: some are refused at the start, and some fail later (the caller
/// must then read them the blocking way).
final class LaterBackend: AsyncReadingBackend, @unchecked Sendable {
    let memory: MemoryBackend
    let answeredLater = Atomic<Int>(0)
    let failedLater = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    private let started = Atomic<Int>(0)
    private let queue = DispatchQueue(label: "later-backend", attributes: .concurrent)

    init(size: UInt64) { memory = MemoryBackend(size: size) }

    var size: UInt64 { memory.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try memory.read(into: buffer, at: offset) }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try memory.write(bytes, at: offset) }
    func discard(at offset: UInt64, length: UInt64) throws { try memory.discard(at: offset, length: length) }
    func flush() throws { try memory.flush() }

    func startRead(count: Int, at offset: UInt64, completion: @escaping @Sendable (UnsafeRawBufferPointer?) -> Void) -> Bool {
        let number = started.add(1, ordering: .relaxed).newValue
        if number % 7 == 0 {
            refused.add(1, ordering: .relaxed)
            return false
        }
        queue.async { [memory] in
            if number % 5 == 0 {
                self.failedLater.add(1, ordering: .relaxed)
                return completion(nil)
            }
            let bytes = memory.bytes(at: offset, count: count)
            self.answeredLater.add(1, ordering: .relaxed)
            bytes.withUnsafeBytes { completion($0) }
        }
        return true
    }
}

/// A backend that keeps each read's completion until the test answers it.
final class HeldBackend: AsyncReadingBackend, @unchecked Sendable {
    let memory = MemoryBackend(size: 1 << 20)
    let held = Mutex<[@Sendable (UnsafeRawBufferPointer?) -> Void]>([])

    var size: UInt64 { memory.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try memory.read(into: buffer, at: offset) }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try memory.write(bytes, at: offset) }
    func discard(at offset: UInt64, length: UInt64) throws { try memory.discard(at: offset, length: length) }
    func flush() throws { try memory.flush() }

    func startRead(count: Int, at offset: UInt64, completion: @escaping @Sendable (UnsafeRawBufferPointer?) -> Void) -> Bool {
        held.withLock { $0.append(completion) }
        return true
    }

    /// Answers every held read with zeros of `count` bytes.
    func answerAll(count: Int) {
        let completions = held.withLock { held in defer { held.removeAll() }; return held }
        let zeros = [UInt8](repeating: 0, count: count)
        for completion in completions { zeros.withUnsafeBytes { completion($0) } }
    }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

extension DeviceTests {
    @Suite(.blockingTolerant) struct AsyncReads {
        @Test("reads a backend answers later reach the device byte-exact; refused and failed ones are read the blocking way")
        func answeredLater() throws {
            try NodeFixture.run { fixture in
                let backend = LaterBackend(size: 16 << 20)
                let file = try fixture.exporter.add(name: "later", backend: backend)
                let device = try fixture.attacher.attach(file: file, readOnly: false, directIO: true)
                let data = pattern(seed: 91, count: 16 << 20)
                try DeviceIO.write(data, to: device, at: 0, direct: true, sync: true)
                #expect(backend.memory.bytes(at: 0, count: data.count) == data)

                // Many 4 KiB and 64 KiB reads at once from several threads, each checked.
                let mismatches = Atomic<Int>(0)
                DispatchQueue.concurrentPerform(iterations: 8) { thread in
                    var generator = SeededGenerator(seed: UInt64(thread + 1))
                    for _ in 0..<200 {
                        let count = Bool.random(using: &generator) ? 4096 : 65536
                        let offset = UInt64.random(in: 0..<UInt64(data.count - count) / 4096, using: &generator) * 4096
                        let read = try? DeviceIO.read(device, at: offset, count: count, direct: true)
                        if read != Array(data[Int(offset)..<Int(offset) + count]) { mismatches.add(1, ordering: .relaxed) }
                    }
                }
                let (wrong, later, failed, refused) = (mismatches.load(ordering: .relaxed), backend.answeredLater.load(ordering: .relaxed),
                                                       backend.failedLater.load(ordering: .relaxed), backend.refused.load(ordering: .relaxed))
                #expect(wrong == 0)
                #expect(later > 0)
                #expect(failed > 0, "no read fell back after a failure: the fallback went untested")
                #expect(refused > 0, "no read was refused at the start: that path went untested")
                #expect(fixture.exporter.pendingReplies.outstanding == 0)
                try fixture.unstage(name: "later", device: device)
            }
        }

        @Test("stopping the exporter waits for the replies still pending before it frees the session")
        func stopWaitsForPendingReplies() throws {
            try NodeFixture.run { fixture in
                let backend = HeldBackend()
                let file = try fixture.exporter.add(name: "held", backend: backend)
                let readFinished = DispatchSemaphore(value: 0)
                Thread.detachNewThread {
                    _ = try? DeviceIO.read(file, at: 0, count: 4096, direct: true)
                    readFinished.signal()
                }
                #expect(waitUntil { !backend.held.withLock { $0.isEmpty } }, "the read never reached the backend")
                #expect(fixture.exporter.pendingReplies.outstanding == 1)

                let stopped = StopFlag()
                Thread.detachNewThread {
                    fixture.exporter.stop()
                    stopped.value.store(true, ordering: .releasing)
                }
                usleep(300_000)
                let stoppedEarly = stopped.value.load(ordering: .acquiring)
                #expect(!stoppedEarly, "stop() returned while a reply was still pending")
                backend.answerAll(count: 4096)
                #expect(waitUntil { stopped.value.load(ordering: .acquiring) }, "stop() did not return after the last reply")
                #expect(readFinished.wait(timeout: .now() + 5) == .success, "the reader was never answered")
                #expect(fixture.exporter.pendingReplies.outstanding == 0)
            }
        }
    }
}
