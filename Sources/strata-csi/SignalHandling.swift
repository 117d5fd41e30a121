#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Dispatch
import Logging

/// Routes SIGTERM and SIGINT to `onSignal` on a dispatch queue.
///
/// Deliberately a plain global function: Swift 6 makes closures created in top-level code
/// MainActor-isolated, and such a handler traps when the signal arrives off the main actor.
func installShutdownSignalHandlers(logger: Logger, onSignal: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    [SIGTERM, SIGINT].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            logger.notice("received signal", metadata: ["signal": "\(number == SIGTERM ? "SIGTERM" : "SIGINT")"])
            onSignal()
        }
        source.resume()
        return source
    }
}
