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

/// Tells whether the session loop thread has returned, and lets `stop()` wait for it.
final class LoopCompletion: Sendable {
    private let finished = Atomic<Bool>(false)
    private let signal = DispatchSemaphore(value: 0)
    private let loopThread = Atomic<UInt>(0)

    /// The thread running `fuse_session_loop_mt`, once it started.
    var thread: pthread_t? {
        let value = loopThread.load(ordering: .acquiring)
        return value == 0 ? nil : pthread_t(value)
    }

    func started(on thread: pthread_t) { loopThread.store(UInt(thread), ordering: .releasing) }

    var isFinished: Bool { finished.load(ordering: .acquiring) }

    func finish() {
        finished.store(true, ordering: .releasing)
        signal.signal()
    }

    /// Waits up to `seconds`; true once the loop has returned.
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

    /// Runs `fuse_session_loop_mt` on a thread of its own; it returns once the connection
    /// ends (unmount or abort).
    static func runLoop(_ session: SessionPointer, maxThreads: Int, logger: Logger) -> LoopCompletion {
        let completion = LoopCompletion()
        let thread = Thread {
            completion.started(on: strata_current_thread())
            // Inherited by the worker threads libfuse creates from this one: serving writeback of
            // a filesystem on our own loop devices must not wait for that same writeback.
            if strata_set_io_flusher() != 0 {
                logger.warning("could not mark the FUSE threads as I/O flushers (PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE); under memory pressure, writeback through the export can stall", metadata: ["errno": "\(errno)"])
            }
            let config = fuse_loop_cfg_create()
            fuse_loop_cfg_set_max_threads(config, UInt32(maxThreads))
            fuse_loop_cfg_set_idle_threads(config, UInt32(maxThreads))
            let result = fuse_session_loop_mt(session.pointer, config)
            fuse_loop_cfg_destroy(config)
            if result != 0 {
                logger.warning("FUSE session loop ended with an error", metadata: ["result": "\(result)"])
            } else {
                logger.debug("FUSE session loop ended")
            }
            completion.finish()
        }
        thread.name = "strata-fuse"
        thread.start()
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
