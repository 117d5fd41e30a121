import Foundation
import Testing

/// deploy/ is what cluster admins apply; these tests validate it offline with
/// validate_manifests.py (Kubernetes schemas plus the cross-references that break an install
/// silently), and prove the validator notices each kind of mistake it is meant to catch.
@Suite struct DeployManifestTests {
    @Test func deployDirectoryValidates() throws {
        let run = try ManifestValidator.run(deployDirectory: ManifestValidator.deployDirectory)
        #expect(run.status == 0, "validate_manifests.py failed:\n\(run.output)")
        #expect(run.output.contains("checks, ok"), "unexpected report:\n\(run.output)")
    }

    @Test(arguments: Breakage.all)
    func validatorRejects(_ breakage: Breakage) throws {
        let copy = try ManifestValidator.copyOfDeployDirectory()
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        try breakage.apply(in: copy)

        let run = try ManifestValidator.run(deployDirectory: copy)
        #expect(run.status == 1, "validator did not fail for \(breakage):\n\(run.output)")
        #expect(run.output.contains(breakage.expectedReport),
                "report for \(breakage) lacks \"\(breakage.expectedReport)\":\n\(run.output)")
        #expect(!run.output.contains("Traceback"), "validator crashed:\n\(run.output)")
    }
}

/// One deliberate mistake in a copy of deploy/, and the words the validator must report it with.
struct Breakage: CustomStringConvertible, Sendable {
    let description: String
    let file: String
    let original: String
    let replacement: String
    let expectedReport: String

    static let all: [Breakage] = [
        Breakage(description: "a sidecar dialing the wrong socket", file: "node-daemonset.yaml",
                 original: "- --csi-address=/csi/csi.sock\n            - --node-deployment=true\n"
                     + "            # PVCs",
                 replacement: "- --csi-address=/csi/strata.sock\n"
                     + "            - --node-deployment=true\n            # PVCs",
                 expectedReport: "container csi-provisioner: --csi-address /csi/strata.sock"),
        Breakage(description: "the socket directory under another name", file: "node-daemonset.yaml",
                 original: "path: /var/lib/kubelet/plugins/strata.csi.dev\n",
                 replacement: "path: /var/lib/kubelet/plugins/strata\n",
                 expectedReport: "is not the driver's host socket"),
        Breakage(description: "a StorageClass provisioner that is not the CSIDriver",
                 file: "storageclass.yaml",
                 original: "provisioner: strata.csi.dev", replacement: "provisioner: strata.csi.io",
                 expectedReport: "provisioner 'strata.csi.io' is not the CSIDriver"),
        Breakage(description: "a VolumeSnapshotClass for another driver",
                 file: "volumesnapshotclass.yaml",
                 original: "driver: strata.csi.dev", replacement: "driver: csi.strata.dev",
                 expectedReport: "driver 'csi.strata.dev' is not the CSIDriver"),
        Breakage(description: "the provisioner without delete on PVs", file: "rbac.yaml",
                 original: "verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\", \"delete\"]",
                 replacement: "verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\"]",
                 expectedReport: "csi-provisioner needs delete on persistentvolumes"),
        Breakage(description: "the resizer without its lease Role", file: "rbac.yaml",
                 original: "resources: [\"leases\"]", replacement: "resources: [\"lease\"]",
                 expectedReport: "csi-resizer (--leader-election) needs create on leases"),
        Breakage(description: "a driver flag strata-csi does not have", file: "node-daemonset.yaml",
                 original: "- --log-level=info", replacement: "- --loglevel=info",
                 expectedReport: "--loglevel is not a strata-csi flag"),
        Breakage(description: "the state directory off the host", file: "node-daemonset.yaml",
                 original: "- --state-dir=/var/lib/strata\n",
                 replacement: "- --state-dir=/var/lib/strata-data\n",
                 expectedReport: "--state-dir /var/lib/strata-data is not on a hostPath volume"),
        Breakage(description: "a sidecar flag its release does not have", file: "node-daemonset.yaml",
                 original: "- --strict-topology=true", replacement: "- --strict-topologies=true",
                 expectedReport: "--strict-topologies is not a csi-provisioner v6.3.0 flag"),
        Breakage(description: "a field the Kubernetes schema does not have",
                 file: "csidriver.yaml",
                 original: "  attachRequired: false", replacement: "  attachRequire: false",
                 expectedReport: "'attachRequire' was unexpected"),
        Breakage(description: "a StorageProfile volume mode CDI does not know",
                 file: "cdi/storageprofile.yaml",
                 original: "volumeMode: Block", replacement: "volumeMode: block",
                 expectedReport: "'block' is not one of ['Block', 'Filesystem']"),
        Breakage(description: "a VM cloning a DataSource nothing keeps",
                 file: "examples/virtualmachine.yaml",
                 original: "          name: fedora\n", replacement: "          name: centos\n",
                 expectedReport: "DataSource golden-images/centos is not kept"),
    ]

    /// Rewrites the file, first proving the original text is there (so a breakage that no
    /// longer matches the manifests fails loudly instead of testing nothing).
    func apply(in deployDirectory: URL) throws {
        let url = deployDirectory.appending(path: file)
        let text = try String(contentsOf: url, encoding: .utf8)
        try #require(text.contains(original), "\(file) no longer contains \(original.debugDescription)")
        try text.replacingOccurrences(of: original, with: replacement)
            .write(to: url, atomically: true, encoding: .utf8)
    }
}

/// Runs Tests/DeployTests/validate_manifests.py with the python3 on PATH (or $PYTHON3).
enum ManifestValidator {
    /// The repository root: this file is Tests/DeployTests/DeployManifestTests.swift.
    static let repositoryRoot = URL(filePath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let deployDirectory = repositoryRoot.appending(path: "deploy").resolvingSymlinksInPath()
    static let script = repositoryRoot.appending(path: "Tests/DeployTests/validate_manifests.py")

    struct Run {
        let status: Int32
        let output: String
    }

    /// The strata-csi that `swift build` put next to this test bundle, so flags are checked
    /// against the real `--help` rather than a list.
    static var builtDriverBinary: String? {
        let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = (testBinary as NSString).deletingLastPathComponent
        while !directory.isEmpty, directory != "/" {
            if FileManager.default.isExecutableFile(atPath: directory + "/strata-csi") { return directory + "/strata-csi" }
            directory = (directory as NSString).deletingLastPathComponent
        }
        return nil
    }

    static func run(deployDirectory: URL) throws -> Run {
        let python = ProcessInfo.processInfo.environment["PYTHON3"] ?? "python3"
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/env")
        process.arguments = [python, script.path, deployDirectory.path]
        // No __pycache__ written into the source tree (parallel runs share it).
        var environment = ProcessInfo.processInfo.environment.merging(["PYTHONDONTWRITEBYTECODE": "1"]) { _, new in new }
        if environment["STRATA_CSI_BINARY"] == nil, let binary = builtDriverBinary {
            environment["STRATA_CSI_BINARY"] = binary
        }
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self))
    }

    /// A fresh copy of deploy/ at <temporary>/<unique>/deploy: a real directory, never a link
    /// back to the repository (the breakages write into it).
    static func copyOfDeployDirectory() throws -> URL {
        let files = FileManager.default
        let parent = files.temporaryDirectory.appending(path: "strata-deploy-\(UUID().uuidString)")
        try files.createDirectory(at: parent, withIntermediateDirectories: true)
        let copy = parent.appending(path: "deploy")
        try files.copyItem(at: deployDirectory, to: copy)
        let type = try files.attributesOfItem(atPath: copy.path)[.type] as? FileAttributeType
        try #require(type == .typeDirectory, "the copy of deploy/ is not a directory")
        return copy
    }
}
