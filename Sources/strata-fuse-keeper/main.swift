import FuseKeeperProtocol
@preconcurrency import Glibc

// strata-fuse-keeper --socket PATH: holds the node plugin's /dev/fuse descriptors (see Keeper).
// No other flags: it is meant to run for months, untouched by driver upgrades.
setvbuf(stdout, nil, _IOLBF, 0)
let usage = "usage: strata-fuse-keeper --socket PATH"
var arguments = CommandLine.arguments.dropFirst()
var socketPath: String?
while let argument = arguments.popFirst() {
    switch argument {
    case "--socket": socketPath = arguments.popFirst()
    case "--help", "-h":
        print(usage)
        exit(0)
    default:
        fputs("strata-fuse-keeper: unknown argument \(argument)\n\(usage)\n", stderr)
        exit(2)
    }
}
guard let socketPath, socketPath.hasPrefix("/") else {
    fputs("strata-fuse-keeper: --socket needs an absolute path\n\(usage)\n", stderr)
    exit(2)
}
guard getuid() == 0 else {
    fputs("strata-fuse-keeper: must run as root (it holds root-only FUSE descriptors)\n", stderr)
    exit(2)
}
// A parent may have started us with signals blocked (the mask is inherited): SIGTERM must end us.
var none = sigset_t()
sigemptyset(&none)
sigprocmask(SIG_SETMASK, &none, nil)
signal(SIGTERM, SIG_DFL)
signal(SIGPIPE, SIG_IGN)

// A socket file nobody answers on is left by a keeper that died: replace it. One that answers
// belongs to a running keeper, and two keepers would split the descriptors between them.
if access(socketPath, F_OK) == 0 {
    if let probe = try? KeeperSocket.connect(socketPath) {
        close(probe)
        fputs("strata-fuse-keeper: another keeper is listening at \(socketPath)\n", stderr)
        exit(1)
    }
    unlink(socketPath)
}
let listener: Int32
do {
    listener = try KeeperSocket.listen(socketPath)
} catch {
    fputs("strata-fuse-keeper: \(error)\n", stderr)
    exit(1)
}
log("listening at \(socketPath)")
Keeper(listener: listener).run()
