#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

/// A blocking client of QEMU's machine protocol (QMP) on a Unix socket: JSON objects, one per
/// line. Commands are answered in order; asynchronous events (STOP, RESUME, MIGRATION...) can
/// arrive between them and are kept in `events`. Blocking is fine here: a test drives one QEMU
/// at a time through it, and every wait has a deadline.
final class QMPClient: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let socketPath: String
    private let fd: Int32
    private var buffer = [UInt8]()
    private let lock = NSLock()
    private var receivedEvents: [[String: Any]] = []

    /// Connects (retrying while QEMU has not created the socket yet, up to `timeout`) and leaves
    /// capabilities negotiation mode, so commands can be sent. `isAlive` stops the retries early
    /// when the QEMU process is gone.
    init(socketPath: String, timeout: Duration = .seconds(30), isAlive: () -> Bool = { true }) throws {
        self.socketPath = socketPath
        let deadline = ContinuousClock.now + timeout
        var connected: Int32 = -1
        while connected < 0 {
            connected = Self.connect(socketPath)
            if connected >= 0 { break }
            guard isAlive() else { throw Failure(description: "QEMU exited before its QMP socket \(socketPath) accepted a connection") }
            guard ContinuousClock.now < deadline else { throw Failure(description: "QMP socket \(socketPath) did not accept a connection in \(timeout)") }
            usleep(20_000)
        }
        fd = connected
        let greeting = try readMessage(until: deadline)
        guard greeting["QMP"] != nil else { throw Failure(description: "no QMP greeting on \(socketPath): \(greeting)") }
        _ = try execute("qmp_capabilities")
    }

    deinit { close(fd) }

    /// Runs a command and returns its `return` value (an object, or an empty one for commands
    /// that return nothing); a QMP `error` answer is thrown with its class and description.
    @discardableResult
    func execute(_ command: String, _ arguments: [String: Any] = [:], timeout: Duration = .seconds(30)) throws -> [String: Any] {
        lock.lock()
        defer { lock.unlock() }
        var message: [String: Any] = ["execute": command]
        if !arguments.isEmpty { message["arguments"] = arguments }
        var line = try JSONSerialization.data(withJSONObject: message)
        line.append(UInt8(ascii: "\n"))
        try send(line)
        let deadline = ContinuousClock.now + timeout
        while true {
            let answer = try readMessage(until: deadline)
            if answer["event"] != nil {
                receivedEvents.append(answer)
                continue
            }
            if let error = answer["error"] as? [String: Any] {
                throw Failure(description: "QMP \(command) failed: \(error["class"] ?? "?"): \(error["desc"] ?? "?")")
            }
            return answer["return"] as? [String: Any] ?? [:]
        }
    }

    /// Names of the events received so far, oldest first (only those read while waiting for answers).
    var events: [String] {
        lock.lock()
        defer { lock.unlock() }
        return receivedEvents.compactMap { $0["event"] as? String }
    }

    private func send(_ data: Data) throws {
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let sent = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if sent < 0, errno == EINTR { continue }
                guard sent > 0 else { throw Failure(description: "QMP send on \(socketPath): \(String(cString: strerror(errno)))") }
                offset += sent
            }
        }
    }

    /// Reads one JSON object (one line), waiting at most until `deadline`.
    private func readMessage(until deadline: ContinuousClock.Instant) throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.allSatisfy({ $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: " ") }) { continue }
                guard let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                    throw Failure(description: "QMP sent something other than an object: \(String(decoding: line, as: UTF8.self))")
                }
                return object
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw Failure(description: "QMP on \(socketPath) did not answer in time") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(min(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            let ready = poll(&poller, 1, milliseconds)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = recv(fd, &chunk, chunk.count, 0)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw Failure(description: "QMP connection \(socketPath) closed (QEMU exited?)") }
            buffer.append(contentsOf: chunk[..<count])
        }
    }

    private static func connect(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8.prefix($0.count - 1)) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            close(fd)
            return -1
        }
        return fd
    }
}
