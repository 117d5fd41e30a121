import Foundation
import GRPCCore
import Logging
import SwiftProtobuf

/// One log line per RPC: method, the ids it concerns, the gRPC code and the duration (also
/// counted in `metrics`). Request bodies are logged at debug level only, with every secret redacted.
struct RequestLogger: ServerInterceptor {
    let logger: Logger
    let metrics: DriverMetrics

    /// Request fields (JSON names) worth a place on the RPC's log line.
    private static let subjectFields = [
        "name", "volumeId", "snapshotId", "sourceVolumeId", "groupSnapshotId",
        "stagingTargetPath", "targetPath", "baseSnapshotId", "targetSnapshotId",
    ]

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let started = ContinuousClock.now
        var metadata: Logger.Metadata = ["rpc": "\(context.descriptor.method)"]
        // Every CSI call carries exactly one request message, so reading it here costs nothing.
        let single = try await ServerRequest(stream: request)
        if let message = single.message as? any SwiftProtobuf.Message {
            metadata.merge(Self.subject(of: message)) { current, _ in current }
            if logger.logLevel <= .debug {
                logger.debug("request body", metadata: metadata.merging(
                    ["body": "\(SecretRedaction.redactedJSON(of: message))"]) { current, _ in current })
            }
        }

        let method = context.descriptor.method
        let logCompletion: @Sendable (RPCError?) -> Void = { [logger, metrics, metadata] error in
            metrics.recordCall(method: method, code: error?.code, duration: ContinuousClock.now - started)
            var line = metadata
            line["code"] = "\(error.map { "\($0.code)" } ?? "ok")"
            line["duration_ms"] = "\(Self.milliseconds(since: started))"
            if let error {
                line["error"] = "\(error.message)"
                logger.log(level: Self.level(for: error.code), "rpc failed", metadata: line)
            } else {
                logger.info("rpc", metadata: line)
            }
        }

        let response: StreamingServerResponse<Output>
        do {
            response = try await next(StreamingServerRequest(single: single), context)
        } catch {
            logCompletion(Self.rpcError(from: error))
            throw error
        }
        switch response.accepted {
        case .failure(let error):
            logCompletion(error)
            return response
        case .success(var contents):
            let producer = contents.producer
            contents.producer = { writer in
                do {
                    let trailers = try await producer(writer)
                    logCompletion(nil)
                    return trailers
                } catch {
                    logCompletion(Self.rpcError(from: error))
                    throw error
                }
            }
            return StreamingServerResponse(accepted: .success(contents))
        }
    }

    private static func subject(of message: any SwiftProtobuf.Message) -> Logger.Metadata {
        guard let json = try? message.jsonUTF8Data(),
              let fields = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any]
        else { return [:] }
        var subject: Logger.Metadata = [:]
        for field in subjectFields {
            if let value = fields[field] as? String { subject[field] = "\(value)" }
        }
        return subject
    }

    private static func rpcError(from error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        if let convertible = error as? any RPCErrorConvertible { return RPCError(convertible) }
        return RPCError(code: .unknown, message: "\(error)")
    }

    /// Client mistakes are normal traffic; only the driver's own failures are errors.
    private static func level(for code: RPCError.Code) -> Logger.Level {
        switch code {
        case .internalError, .unknown, .dataLoss, .unavailable: .error
        default: .notice
        }
    }

    private static func milliseconds(since start: ContinuousClock.Instant) -> String {
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        return String(format: "%.2f", ms)
    }
}
