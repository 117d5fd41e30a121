import CFuse3
import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization

/// A libfuse session pointer that may cross threads (libfuse synchronises internally).
struct SessionPointer: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// Tells whether every worker of the session loop has returned, and lets `stop()` wait for them.
final class LoopCompletion: Sendable {
    private let remaining: Atomic<Int>
    private let finished = Atomic<Bool>(false)
    private let signal = DispatchSemaphore(value: 0)
    private let workers = Mutex<[UInt]>([])

    init(workers: Int) {
        remaining = Atomic(workers)
    }

    var isFinished: Bool { finished.load(ordering: .acquiring) }

    func started(on thread: pthread_t) { workers.withLock { $0.append(UInt(thread)) } }

    /// Signals every worker still running (a worker leaves the list before it returns, so no
    /// signal reaches a thread that is gone).
    func wakeWorkers() {
        workers.withLock { threads in
            for thread in threads { _ = strata_wake_thread(pthread_t(thread)) }
        }
    }

    func workerFinished(on thread: pthread_t) {
        workers.withLock { threads in threads.removeAll { $0 == UInt(thread) } }
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            finished.store(true, ordering: .releasing)
            signal.signal()
        }
    }

    /// Waits up to `seconds`; true once every worker has returned.
    func wait(seconds: Double) -> Bool {
        if isFinished { return true }
        _ = signal.wait(timeout: .now() + seconds)
        return isFinished
    }
}

/// Creating a libfuse session and running its multi-threaded loop.
enum FuseSession {
    /// A new (not yet mounted) session whose callbacks reach the exporter through `exporter`.
    static func create(exporter: UnsafeMutableRawPointer, options: FuseExporter.Options) -> SessionPointer? {
        _ = logHandlerInstalled
        let mountOptions = [
            "allow_other",  // kubelet and the loop driver are not necessarily the process that mounted
            "default_permissions",  // the kernel checks the 0600 root-only modes
            "fsname=strata",
            "subtype=strata",
            "max_read=\(options.maxTransferSize)",
        ].joined(separator: ",")
        let arguments = ["strata-fuse", "-o", mountOptions]
        var cStrings = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        return cStrings.withUnsafeMutableBufferPointer { argv -> SessionPointer? in
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            var operations = FuseOperations.makeTable()
            guard let session = fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, exporter) else {
                return nil
            }
            return SessionPointer(pointer: session)
        }
    }

    /// Runs the session on `maxThreads` worker threads of our own (see `strata_fuse_serve` for
    /// why not libfuse's loop); they return once the connection ends (unmount or abort) or the
    /// session is exited and they are woken.
    static func runLoop(_ session: SessionPointer, maxThreads: Int, bufferSize: Int, logger: Logger) -> LoopCompletion {
        let completion = LoopCompletion(workers: maxThreads)
        for index in 0..<maxThreads {
            let thread = Thread {
                completion.started(on: strata_current_thread())
                // Serving writeback of a filesystem on our own loop devices must not wait for that
                // same writeback.
                if strata_set_io_flusher() != 0 && index == 0 {
                    logger.warning("could not mark the FUSE threads as I/O flushers (PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE); under memory pressure, writeback through the export can stall", metadata: ["errno": "\(errno)"])
                }
                let result = strata_fuse_serve(session.pointer, bufferSize)
                if result != 0 && index == 0 {
                    logger.debug("FUSE session worker ended with an error", metadata: ["errno": "\(-result)"])
                }
                completion.workerFinished(on: strata_current_thread())
            }
            thread.name = "strata-fuse"
            thread.start()
        }
        return completion
    }

    /// Routes libfuse's own messages (normally printed to stderr) into swift-log, once.
    private static let logHandlerInstalled: Void = {
        fuse_set_log_func { level, format, arguments in
            guard let format, let arguments else { return }
            var buffer = [CChar](repeating: 0, count: 1024)
            _ = vsnprintf(&buffer, buffer.count, format, arguments)
            let length = buffer.firstIndex(of: 0) ?? buffer.count
            let message = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            switch level {
            case FUSE_LOG_EMERG, FUSE_LOG_ALERT, FUSE_LOG_CRIT, FUSE_LOG_ERR:
                libfuseLogger.error("\(message)")
            case FUSE_LOG_WARNING, FUSE_LOG_NOTICE:
                libfuseLogger.warning("\(message)")
            default:
                libfuseLogger.debug("\(message)")
            }
        }
    }()
}

private let libfuseLogger = Logger(label: "strata.nodehost.libfuse")

/// Reusable I/O buffers, one per thread: a 1 MiB read must not cost an mmap and page faults each
/// time, nor take a lock. (A shared free list behind a mutex made 16 FUSE workers on 2 cores
/// spin in the mutex's slow path: random 4 KiB reads ran at a quarter of a plain file's rate.)
/// libfuse serves a request on one worker thread from start to end, so a thread's buffer is
/// free whenever it starts one; a nested use on the same thread gets a fresh buffer.
final class BufferPool: Sendable {
    let bufferSize: Int

    init(bufferSize: Int) {
        self.bufferSize = bufferSize
    }

    /// Runs `body` with a buffer of at least `count` bytes.
    func withBuffer<T>(count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> T) rethrows -> T {
        guard count <= bufferSize, let slot = ThreadBuffer.current(), !slot.pointee.inUse else {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
            defer { buffer.deallocate() }
            return try body(buffer)
        }
        if slot.pointee.capacity < bufferSize {
            slot.pointee.memory?.deallocate()
            slot.pointee.memory = .allocate(byteCount: bufferSize, alignment: 4096)
            slot.pointee.capacity = bufferSize
        }
        slot.pointee.inUse = true
        defer { slot.pointee.inUse = false }
        return try body(UnsafeMutableRawBufferPointer(start: slot.pointee.memory, count: count))
    }
}

/// The calling thread's I/O buffer, freed when the thread exits (pthread key destructor).
private struct ThreadBuffer {
    var memory: UnsafeMutableRawPointer?
    var capacity = 0
    var inUse = false

    /// One key for the process; nil if the key or the slot could not be created.
    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        let created = pthread_key_create(&key) { raw in
            guard let slot = raw?.assumingMemoryBound(to: ThreadBuffer.self) else { return }
            slot.pointee.memory?.deallocate()
            slot.deinitialize(count: 1)
            slot.deallocate()
        }
        return created == 0 ? key : nil
    }()

    static func current() -> UnsafeMutablePointer<ThreadBuffer>? {
        guard let key else { return nil }
        if let existing = pthread_getspecific(key) {
            return existing.assumingMemoryBound(to: ThreadBuffer.self)
        }
        let slot = UnsafeMutablePointer<ThreadBuffer>.allocate(capacity: 1)
        slot.initialize(to: ThreadBuffer())
        guard pthread_setspecific(key, slot) == 0 else {
            slot.deallocate()
            return nil
        }
        return slot
    }
}
