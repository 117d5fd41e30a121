import Foundation
import StrataTestSupport
import Synchronization

/// A GOPATH-mode Go workspace in a temporary directory (there is no module proxy here), built
/// against Debian's Go packages in /usr/share/gocode. The binaries built in it serve the whole
/// test process, so it is removed when the process exits.
struct GoWorkspace {
    let path: String

    init(named name: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("strata-go-\(name)-\(getpid())").path
        try FileManager.default.createDirectory(atPath: path + "/src", withIntermediateDirectories: true)
        Self.removedAtExit.withLock { paths in
            if paths.isEmpty { atexit { GoWorkspace.removeAll() } }
            paths.append(path)
        }
    }

    private static let removedAtExit = Mutex<[String]>([])

    private static func removeAll() {
        for path in removedAtExit.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }

    /// Copies `sources` (paths inside the repository) into package `package` and builds it;
    /// returns the binary's path.
    func build(package: String, from sources: [String]) throws -> String {
        let directory = path + "/src/" + package
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for source in sources {
            let destination = directory + "/" + (source as NSString).lastPathComponent
            try? FileManager.default.removeItem(atPath: destination)
            try FileManager.default.copyItem(atPath: Repository.path(source), toPath: destination)
        }
        let binary = path + "/" + package
        try ExternalTool.run("go", ["build", "-o", binary, "."],
                             environment: ["GO111MODULE": "off", "GOPATH": "\(path):/usr/share/gocode", "GOFLAGS": ""],
                             in: directory)
        return binary
    }
}
