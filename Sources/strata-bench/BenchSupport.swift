import Foundation
import Glibc

/// Monotonic time in seconds.
@inline(__always)
func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Seconds spent in `body`.
func measure(_ body: () throws -> Void) rethrows -> Double {
    let start = now()
    try body()
    return now() - start
}

/// The value below which `fraction` of the samples lie (nearest rank).
func percentile(_ samples: [Double], _ fraction: Double) -> Double {
    guard !samples.isEmpty else { return .nan }
    let sorted = samples.sorted()
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// Bytes allocated on disk under `path` (files only, recursively).
func diskUsage(of path: String) -> UInt64 {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total: UInt64 = 0
    for case let relative as String in enumerator {
        var info = stat()
        if lstat(path + "/" + relative, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG {
            total += UInt64(info.st_blocks) * 512
        }
    }
    return total
}

/// A plain sparse file read and written with pread/pwrite: the baseline the store is measured against.
final class PlainFile {
    let descriptor: Int32
    let path: String

    init(path: String, size: UInt64) throws {
        self.path = path
        descriptor = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0, ftruncate(descriptor, off_t(size)) == 0 else { throw BenchError("cannot create \(path)") }
    }

    deinit {
        close(descriptor)
        unlink(path)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            guard n > 0 else { throw BenchError("pread failed") }
            done += n
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            guard n > 0 else { throw BenchError("pwrite failed") }
            done += n
        }
    }

    func synchronize() throws {
        guard fdatasync(descriptor) == 0 else { throw BenchError("fdatasync failed") }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// SplitMix64 filling of large buffers with incompressible bytes.
func fillRandom(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64) {
    var generator = SplitMix(state: seed)
    let words = buffer.count / 8
    let pointer = buffer.baseAddress!.bindMemory(to: UInt64.self, capacity: words)
    for index in 0..<words { pointer[index] = generator.next() }
    for index in words * 8..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: generator.next()) }
}

/// One measured figure: a JSON key, its value, and how to show it in the table.
struct Figure {
    var key: String
    var value: Double?
    var unit: String
    var label: String
}

/// The results of a run, in the order they were measured.
final class Report {
    private(set) var figures: [Figure] = []
    private var sections: [(title: String, start: Int)] = []

    func section(_ title: String) {
        sections.append((title, figures.count))
        FileHandle.standardError.write(Data("· \(title)\n".utf8))
    }

    func add(_ key: String, _ value: Double?, _ unit: String, _ label: String) {
        figures.append(Figure(key: key, value: value, unit: unit, label: label))
    }

    func table() -> String {
        var lines: [String] = []
        for (number, section) in sections.enumerated() {
            let end = number + 1 < sections.count ? sections[number + 1].start : figures.count
            lines.append("")
            lines.append(section.title)
            for figure in figures[section.start..<end] {
                let value = figure.value.map { format($0) } ?? "n/a"
                lines.append("  " + figure.label.padding(toLength: 58, withPad: " ", startingAt: 0)
                    + String(repeating: " ", count: max(0, 12 - value.count)) + value + " " + figure.unit)
            }
        }
        return lines.joined(separator: "\n")
    }

    func json(extra: [String: Any]) throws -> String {
        var object = extra
        for figure in figures { object[figure.key] = figure.value.map { ($0 * 1000).rounded() / 1000 } ?? NSNull() }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    private func format(_ value: Double) -> String {
        if value.isNaN { return "n/a" }
        if abs(value) >= 1000 { return String(format: "%.0f", value) }
        if abs(value) >= 10 { return String(format: "%.1f", value) }
        return String(format: "%.3f", value)
    }
}

/// Drops the clean cached pages of files (they must have been written back first).
func dropCachedPages(of paths: [String]) {
    for path in paths {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { continue }
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
        close(descriptor)
    }
}
