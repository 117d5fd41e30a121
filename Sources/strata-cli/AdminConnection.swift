import AdminProto
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// One connection to the driver's admin socket per command; gRPC errors become one clear line.
enum AdminConnection {
    typealias Client = Strata_Admin_V1_Admin.Client<HTTP2ClientTransport.Posix>

    static func call<Result: Sendable>(_ options: ConnectionOptions, _ body: @Sendable (Client) async throws -> Result) async throws -> Result {
        let path = try options.socketPath()
        guard FileManager.default.fileExists(atPath: path) else {
            throw failure("no admin socket at \(path): is strata-csi running with this --state-dir or --endpoint?")
        }
        do {
            return try await withGRPCClient(
                transport: .http2NIOPosix(target: .unixDomainSocket(path: path), transportSecurity: .plaintext)
            ) { client in
                try await body(Client(wrapping: client))
            }
        } catch let error as RPCError {
            throw failure(error.code == .unavailable ? "cannot reach the driver at \(path): \(error.message)" : "\(error.code): \(error.message)")
        }
    }

    /// Flattens, calling `onProgress` for each message; returns the last one.
    static func flatten(_ options: ConnectionOptions, volume: String,
                        onProgress: @escaping @Sendable (Strata_Admin_V1_FlattenProgress) -> Void) async throws -> Strata_Admin_V1_FlattenProgress {
        try await call(options) { client in
            try await client.flatten(.with { $0.volume = volume }) { response in
                var last = Strata_Admin_V1_FlattenProgress()
                for try await message in response.messages {
                    onProgress(message)
                    last = message
                }
                guard last.finished else { throw RPCError(code: .unknown, message: "the driver stopped before the flatten finished") }
                return last
            }
        }
    }

    private static func failure(_ message: String) -> any Error {
        FileHandle.standardError.write(Data(("strata: " + message + "\n").utf8))
        return ExitCode(1)
    }
}

/// A one-line bar on standard error, redrawn in place.
final class ProgressBar: @unchecked Sendable {
    private let lock = NSLock()
    private var lastPercent = -1

    func show(_ progress: Strata_Admin_V1_FlattenProgress) {
        lock.lock()
        defer { lock.unlock() }
        let total = max(progress.totalClusters, 1)
        let percent = Int(progress.doneClusters * 100 / total)
        guard percent != lastPercent else { return }
        lastPercent = percent
        let width = 40
        let filled = percent * width / 100
        let line = "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            + "] \(percent)% \(progress.doneClusters)/\(progress.totalClusters) clusters"
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
