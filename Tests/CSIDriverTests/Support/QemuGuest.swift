#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

/// One QEMU process running the test guest (GuestImage) on a block device or file, on the host
/// or in a node's network namespace: either booted (a migration source) or waiting for an
/// incoming migration (a target). Its serial console goes to a file (`workloadLog` reads it), its
/// QMP socket is `qmp`. Under TCG, never KVM: this machine's /dev/kvm is a PVM host on which
/// stock kernels hang. `stop()` ends the process and removes its sockets; call it in a `defer`.
final class QemuGuest: @unchecked Sendable {
    /// What QEMU does when the host fails an I/O: tell the guest (so the workload prints an ERROR
    /// line), or pause the VM as KubeVirt's default `error_policy` does (`runState()` is then
    /// "io-error", and the workload prints nothing).
    enum ErrorPolicy: String, Sendable { case report, stop }

    /// How QEMU submits the disk's I/O: Linux AIO (KubeVirt's choice for block devices with
    /// cache=none) or a thread pool.
    enum AsyncIO: String, Sendable { case native, threads }

    /// The guest's disk workload, passed on the kernel command line (scripts/guest/init).
    struct Workload: Sendable {
        /// Blocks of 4 KiB the workload sweeps; 0 means the whole disk.
        var blocks = 0
        var reportEvery = 100
        var verifyEvery = 1000
        /// A pause after every write, to slow the guest down (0: as fast as it can).
        var writeDelayMicroseconds = 0
    }

    /// How a migration target takes over the guest.
    enum Handover: Sendable {
        /// QEMU's default: the target activates the disk and resumes as soon as the stream is in.
        case automatic
        /// libvirt's way (so KubeVirt's): the target starts paused (`-S`) with the
        /// `late-block-activate` capability, so it takes the disk (write permission) only at
        /// `cont`, which `migrate(to:)` sends once the migration completed.
        case libvirt
    }

    /// Everything on QEMU's command line that must match between a migration's source and target
    /// (except the disk path and namespace, which are per node).
    struct Configuration: Sendable {
        /// A block device node (a loop device, a Strata device) or a plain file, used raw.
        var disk: String
        /// The network namespace (a name under /run/netns) to start QEMU in; nil for the host's.
        var networkNamespace: String?
        /// The guest's RAM, less 8 KiB (see `memoryArgument`).
        var memoryMebibytes = 256
        var asyncIO = AsyncIO.native
        var errorPolicy = ErrorPolicy.report
        var workload = Workload()

        init(disk: String, networkNamespace: String? = nil) {
            self.disk = disk
            self.networkNamespace = networkNamespace
        }
    }

    let name: String
    let configuration: Configuration
    let serialPath: String
    /// QEMU's own stdout and stderr.
    let logPath: String
    let qmpSocketPath: String
    /// Where a target listens for the migration stream (`migrate-incoming`); nil for a booted guest.
    let incomingSocketPath: String?
    /// How this target takes over; nil for a booted guest.
    let handover: Handover?
    let qmp: QMPClient
    let startedAt: ContinuousClock.Instant
    private let process = Process()

    /// Boots the guest; returns once QMP answers (the kernel is still booting: see `waitForWorkloadStart`).
    static func boot(_ configuration: Configuration, image: GuestImage, name: String = "source", directory: String) throws -> QemuGuest {
        try QemuGuest(configuration, image: image, name: name, directory: directory, handover: nil)
    }

    /// Starts a QEMU that waits for the migration stream of a guest started with the same
    /// configuration (`-incoming defer`, then `migrate-incoming` on a Unix socket in `directory`:
    /// the nodes' namespaces share the filesystem, so a socket path reaches across them).
    /// Its disk is opened but inactive (no writes, no lock) until the switchover (`.automatic`)
    /// or the `cont` after it (`.libvirt`).
    static func incoming(_ configuration: Configuration, image: GuestImage, name: String = "target", directory: String,
                         handover: Handover = .automatic) throws -> QemuGuest {
        try QemuGuest(configuration, image: image, name: name, directory: directory, handover: handover)
    }

    private init(_ configuration: Configuration, image: GuestImage, name: String, directory: String, handover: Handover?) throws {
        let incoming = handover != nil
        self.name = name
        self.configuration = configuration
        serialPath = "\(directory)/\(name).serial"
        logPath = "\(directory)/\(name).qemu.log"
        qmpSocketPath = "\(directory)/\(name).qmp"
        incomingSocketPath = incoming ? "\(directory)/\(name).migrate" : nil
        self.handover = handover
        for path in [qmpSocketPath, incomingSocketPath].compactMap({ $0 }) { unlink(path) }
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else { throw POSIXError(.EIO) }

        let qemuArguments = Self.arguments(configuration, image: image, name: name, serialPath: serialPath,
                                           qmpSocketPath: qmpSocketPath, handover: handover)
        if let namespace = configuration.networkNamespace {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments = ["--net=/run/netns/\(namespace)", image.qemu] + qemuArguments
        } else {
            process.executableURL = URL(fileURLWithPath: image.qemu)
            process.arguments = qemuArguments
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        startedAt = .now
        try process.run()
        try? log.close()
        let process = self.process, logPath = self.logPath
        do {
            qmp = try QMPClient(socketPath: qmpSocketPath, isAlive: { process.isRunning })
            if handover == .libvirt {
                try qmp.execute("migrate-set-capabilities", ["capabilities": [["capability": "late-block-activate", "state": true]]])
            }
            if let incomingSocketPath { try qmp.execute("migrate-incoming", ["uri": "unix:\(incomingSocketPath)"]) }
        } catch {
            // Not fully initialized, so no stop(): end the process by its id, then report its log.
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            for path in [qmpSocketPath, incomingSocketPath].compactMap({ $0 }) { unlink(path) }
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw QemuGuestFailure(description: "\(name): \(error)\n\(log)")
        }
    }

    static func arguments(_ configuration: Configuration, image: GuestImage, name: String, serialPath: String,
                          qmpSocketPath: String, handover: Handover?) -> [String] {
        let workload = configuration.workload
        // `quiet` keeps the kernel to warnings and errors on the console (an I/O error on vda
        // shows up, the boot chatter that slows TCG down does not). `no_timer_check`: on a loaded
        // host the emulated CPU is too slow for the kernel's IO-APIC timer test, which then
        // panics ("IO-APIC + timer doesn't work"); `panic=-1` with -no-reboot ends QEMU instead
        // of hanging. `loglevel=5` instead of `quiet`: the boot stays short, but a kernel BUG's
        // stack trace (printed at warning level) reaches the console and a failure's log tail
        // (one guest once hung after a migration with only "BUG: scheduling while atomic").
        let commandLine = ["console=ttyS0", "panic=-1", "no_timer_check", "loglevel=5", "strata.blocks=\(workload.blocks)",
                           "strata.report_every=\(workload.reportEvery)", "strata.verify_every=\(workload.verifyEvery)",
                           "strata.write_delay_us=\(workload.writeDelayMicroseconds)"].joined(separator: " ")
        let policy = configuration.errorPolicy.rawValue
        let drive = ["file=\(configuration.disk)", "if=virtio", "format=raw", "cache=none", "aio=\(configuration.asyncIO.rawValue)",
                     "werror=\(policy)", "rerror=\(policy)"].joined(separator: ",")
        let memory = memoryArgument(mebibytes: configuration.memoryMebibytes)
        var arguments = ["-name", name, "-accel", "tcg", "-machine", "pc", "-cpu", "qemu64", "-smp", "1",
                         "-m", memory, "-nodefaults", "-no-user-config", "-display", "none",
                         "-no-reboot", "-kernel", image.kernel, "-initrd", image.initramfs, "-append", commandLine,
                         "-drive", drive, "-serial", "file:\(serialPath)", "-qmp", "unix:\(qmpSocketPath),server=on,wait=off"]
        if let handover { arguments += (handover == .libvirt ? ["-S"] : []) + ["-incoming", "defer"] }
        return arguments
    }

    /// QEMU's `-m` for a guest of `mebibytes`, 8 KiB short of it (the smallest step `-m` takes),
    /// so that its RAM is not a multiple of 256 KiB. QEMU before 9.0 (Debian 12 has 7.2) loses
    /// guest writes in a TCG live migration: its fast path for RAM blocks made of whole 256 KiB
    /// words of the dirty bitmap clears the migration's dirty bits without re-arming the TCG TLB's
    /// not-dirty trap, so stores through TLB entries cached before mark nothing and the page is
    /// not sent again (fixed upstream by commit 03bfc2188f, "physmem: Fix migration dirty bitmap
    /// coherency with TCG memory access"). The target then runs on stale kernel pages: list or
    /// slab corruption BUGs, "scheduling while atomic", or a guest that falls silent. A RAM block
    /// of any other size takes the page-by-page path, which re-arms the trap for each page.
    static func memoryArgument(mebibytes: Int) -> String {
        "\(mebibytes * 1024 - 8)k"
    }

    var isRunning: Bool { process.isRunning }
    var pid: pid_t { process.processIdentifier }
    var qemuLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The serial console as it is now. A target's console holds only what the guest printed
    /// after it moved there (the counters in those lines go on from the source's).
    var workloadLog: GuestWorkloadLog { GuestWorkloadLog(contentsOf: serialPath) }

    /// QEMU's run state (`query-status`): "running", "paused", "inmigrate", "postmigrate", "io-error"...
    func runState() throws -> String {
        try qmp.execute("query-status")["status"] as? String ?? "unknown"
    }

    /// Polls the serial console (sleeping, not blocking a thread) until `condition` holds; fails with the console's tail if QEMU
    /// exits or the time runs out.
    @discardableResult
    func waitForLog(_ what: String, timeout: Duration = .seconds(120),
                    until condition: (GuestWorkloadLog) -> Bool) async throws -> GuestWorkloadLog {
        let deadline = ContinuousClock.now + timeout
        while true {
            let log = workloadLog
            if condition(log) { return log }
            guard process.isRunning else {
                throw QemuGuestFailure(description: """
                    \(name) exited (status \(process.terminationStatus), \(process.terminationReason == .uncaughtSignal ? "signal" : "exit")) \
                    while waiting for \(what):\n\(log.tail())\n\(qemuLog)
                    """)
            }
            guard ContinuousClock.now < deadline else {
                throw QemuGuestFailure(description: "\(name): no \(what) in \(timeout) (\(log)):\n\(log.tail())")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits until the workload has started (the kernel booted and found the disk); returns the
    /// time since QEMU started.
    @discardableResult
    func waitForWorkloadStart(timeout: Duration = .seconds(120)) async throws -> Duration {
        try await waitForLog("the workload's start", timeout: timeout) { $0.workloadStarted }
        return ContinuousClock.now - startedAt
    }

    /// Waits until the workload has reported `writes` writes; returns the time since QEMU started.
    @discardableResult
    func waitForWrites(_ writes: Int, timeout: Duration = .seconds(120)) async throws -> Duration {
        try await waitForLog("\(writes) writes", timeout: timeout) { $0.writes >= writes }
        return ContinuousClock.now - startedAt
    }

    /// Asks QEMU to quit, then makes sure it has (SIGTERM, then SIGKILL), and removes the sockets.
    /// The serial and QEMU logs stay in the directory for the test's messages.
    func stop() {
        guard process.isRunning else { return terminate(grace: .zero) }
        _ = try? qmp.execute("quit", timeout: .seconds(5))
        terminate(grace: .seconds(5))
    }

    private func terminate(grace: Duration) {
        waitForExit(grace)
        for signal in [SIGTERM, SIGKILL] where process.isRunning {
            kill(process.processIdentifier, signal)
            waitForExit(.seconds(10))
        }
        for path in [qmpSocketPath, incomingSocketPath].compactMap({ $0 }) { unlink(path) }
    }

    /// Waits up to `timeout` for QEMU to exit; returns whether it has.
    @discardableResult
    func waitForExit(_ timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
        return !process.isRunning
    }

    deinit { stop() }
}

struct QemuGuestFailure: Error, CustomStringConvertible {
    let description: String
}
