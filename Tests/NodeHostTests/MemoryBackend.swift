import Glibc
import NodeHost
import Synchronization

/// A RAM-backed `BlockBackend` that records what the kernel asked of it. Memory is one
/// anonymous mapping as large as the largest size the test will grow to, so growing never moves it.
final class MemoryBackend: BlockBackend, @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    let capacity: UInt64
    private let currentSize: Atomic<UInt64>
    let readCount = Atomic<Int>(0)
    /// The largest single read and write the kernel sent.
    let largestRead = Atomic<Int>(0)
    let largestWrite = Atomic<Int>(0)
    let writeCount = Atomic<Int>(0)
    let flushCount = Atomic<Int>(0)
    let discards = Mutex<[(offset: UInt64, length: UInt64)]>([])
    /// When set, every call fails with this errno.
    let failing = Atomic<Int32>(0)

    init(size: UInt64, capacity: UInt64? = nil) {
        let capacity = max(size, capacity ?? size)
        let mapping = mmap(nil, Int(capacity), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(mapping != MAP_FAILED, "mmap of \(capacity) bytes failed")
        self.base = mapping!
        self.capacity = capacity
        self.currentSize = Atomic(size)
    }

    deinit {
        munmap(base, Int(capacity))
    }

    var size: UInt64 { currentSize.load(ordering: .acquiring) }

    func grow(to newSize: UInt64) {
        precondition(newSize <= capacity && newSize >= size)
        currentSize.store(newSize, ordering: .releasing)
    }

    private func check(_ offset: UInt64, _ count: Int) throws {
        let error = failing.load(ordering: .relaxed)
        if error != 0 { throw NodeHostError(.systemCall, "injected failure", errno: error) }
        precondition(offset + UInt64(count) <= size, "access past the end: \(offset)+\(count) > \(size)")
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try check(offset, buffer.count)
        readCount.add(1, ordering: .relaxed)
        largestRead.max(buffer.count, ordering: .relaxed)
        buffer.baseAddress!.copyMemory(from: base + Int(offset), byteCount: buffer.count)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try check(offset, bytes.count)
        writeCount.add(1, ordering: .relaxed)
        largestWrite.max(bytes.count, ordering: .relaxed)
        (base + Int(offset)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    func discard(at offset: UInt64, length: UInt64) throws {
        try check(offset, Int(length))
        discards.withLock { $0.append((offset, length)) }
        memset(base + Int(offset), 0, Int(length))
    }

    func flush() throws {
        try check(0, 0)
        flushCount.add(1, ordering: .relaxed)
    }

    /// The stored bytes, read directly (not through the kernel).
    func bytes(at offset: UInt64, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + Int(offset), count: count))
    }

    func store(_ bytes: [UInt8], at offset: UInt64) {
        bytes.withUnsafeBytes { (base + Int(offset)).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}
