import Foundation
import StrataTestSupport
import Testing

/// deploy/ is what cluster admins apply; these tests validate it offline with
/// validate_manifests.py (Kubernetes schemas plus the cross-references that break an install
/// silently), and prove the validator notices each kind of mistake it is meant to catch.
@Suite(.blockingTolerant) struct DeployManifestTests {
    @Test func deployDirectoryValidates() throws {
        let run = try ManifestValidator.run(deployDirectory: ManifestValidator.deployDirectory)
        #expect(run.status == 0, "validate_manifests.py failed:\n\(run.output)")
        #expect(run.output.contains("checks, ok"), "unexpected report:\n\(run.output)")
    }

    /// Issue 22: the driver advertised PUBLISH_UNPUBLISH_VOLUME, so the provisioner waited
    /// forever for a VolumeAttachment informer its role did not allow. The same deploy/ with a
    /// driver advertising that again must fail, naming the sidecar, the verb and the resource.
    @Test func attachCapabilityNeedsVolumeAttachmentAccess() throws {
        let facts = Repository.root.appending(path: "Tests/DeployTests/deploycheck/driver_capabilities.json")
        var table = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: facts)) as? [String: Any])
        var controller = try #require(table["controller"] as? [[String: Any]])
        controller.append(["capability": "PUBLISH_UNPUBLISH_VOLUME", "when": ["modes": ["controller", "all"]]])
        table["controller"] = controller
        let directory = FileManager.default.temporaryDirectory.appending(path: "strata-capabilities-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appending(path: "capabilities.json")
        try JSONSerialization.data(withJSONObject: table).write(to: file)

        let run = try ManifestValidator.run(deployDirectory: ManifestValidator.deployDirectory,
                                            arguments: ["--capabilities", file.path])
        #expect(run.status == 1, "validator did not fail:\n\(run.output)")
        #expect(run.output.contains("csi-provisioner needs list on volumeattachments.storage.k8s.io cluster-wide; no rule grants it (the driver advertises PUBLISH_UNPUBLISH_VOLUME"),
                "unexpected report:\n\(run.output)")
    }

    @Test(arguments: Breakage.all + Breakage.access + Breakage.accessModes)
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
        Breakage(description: "a keeper replaced by a rollout",
                 file: "fuse-keeper-daemonset.yaml",
                 original: "  updateStrategy:\n    type: OnDelete\n",
                 replacement: "  updateStrategy:\n    type: RollingUpdate\n",
                 expectedReport: "replacing the keeper drops every descriptor it holds"),
        Breakage(description: "the keeper's socket on another host path",
                 file: "fuse-keeper-daemonset.yaml",
                 original: "            path: /run/strata\n",
                 replacement: "            path: /run/strata-keeper\n",
                 expectedReport: "but the keeper listens on host /run/strata-keeper/fuse-keeper.sock"),
        Breakage(description: "a rolling driver without the keeper",
                 file: "node-daemonset.yaml",
                 original: "            - --fuse-keeper-socket=/run/strata/fuse-keeper.sock\n",
                 replacement: "",
                 expectedReport: "updateStrategy RollingUpdate without --fuse-keeper-socket"),
        Breakage(description: "two drivers on one node during a rollout",
                 file: "node-daemonset.yaml",
                 original: "      maxSurge: 0\n",
                 replacement: "      maxSurge: 1\n",
                 expectedReport: "maxSurge 1: two drivers"),
        Breakage(description: "a keeper scheduled unlike the driver",
                 file: "fuse-keeper-daemonset.yaml",
                 original: "      tolerations:\n        - operator: Exists\n",
                 replacement: "      tolerations:\n        - key: node-role.kubernetes.io/control-plane\n          operator: Exists\n",
                 expectedReport: "tolerations differs from the driver's"),
        Breakage(description: "a peer Service that is not headless",
                 file: "peer-service.yaml",
                 original: "  clusterIP: None\n",
                 replacement: "",
                 expectedReport: "not headless"),
        Breakage(description: "peers looked up under another Service name",
                 file: "node-daemonset.yaml",
                 original: "--peer-dns=strata-peers.strata-system.svc:9821",
                 replacement: "--peer-dns=strata-peer.strata-system.svc:9821",
                 expectedReport: "names Service strata-system/strata-peer, which is not defined"),
        Breakage(description: "a peer port other than the container port",
                 file: "node-daemonset.yaml",
                 original: "- --peer-listen=:9821",
                 replacement: "- --peer-listen=:9823",
                 expectedReport: "is not --peer-listen's port (9823)"),
        Breakage(description: "the peer port open to every pod",
                 file: "networkpolicy.yaml",
                 original: "        - port: metrics\n",
                 replacement: "        - port: peer\n          protocol: TCP\n        - port: metrics\n",
                 expectedReport: "opens the peer port 9821 to more than the node pods"),
        Breakage(description: "a block wire port other than the container port",
                 file: "node-daemonset.yaml",
                 original: "- --peer-wire-port=9822",
                 replacement: "- --peer-wire-port=9823",
                 expectedReport: "is not the block wire's port (9823)"),
        Breakage(description: "the block wire port open to every pod",
                 file: "networkpolicy.yaml",
                 original: "        - port: metrics\n",
                 replacement: "        - port: peer-wire\n          protocol: TCP\n        - port: metrics\n",
                 expectedReport: "opens the block wire port 9822 to more than the node pods"),
        Breakage(description: "a peer Secret the README does not make",
                 file: "node-daemonset.yaml",
                 original: "secretName: strata-peer-tls",
                 replacement: "secretName: strata-peers-tls",
                 expectedReport: "no `kubectl create secret` makes strata-peers-tls"),
        Breakage(description: "a snapshot class parameter value the driver refuses",
                 file: "volumesnapshotclass.yaml",
                 original: "replicate: all-nodes",
                 replacement: "replicate: every-node",
                 expectedReport: "replicate 'every-node' is not one of ['all-nodes', 'none']"),
        Breakage(description: "golden snapshots that are not pre-placed",
                 file: "cdi/storageprofile.yaml",
                 original: "snapshotClass: strata-golden",
                 replacement: "snapshotClass: strata",
                 expectedReport: "does not pre-place"),
        Breakage(description: "the SnapshotMetadata sidecar on a port it does not declare",
                 file: "node-daemonset.yaml",
                 original: "- --port=50051",
                 replacement: "- --port=50052",
                 expectedReport: "--port 50052 is not a container port"),
        Breakage(description: "a SnapshotMetadataService not named after the driver",
                 file: "snapshot-metadata/snapshotmetadataservice.yaml",
                 original: "  name: strata.csi.dev\n",
                 replacement: "  name: strata\n",
                 expectedReport: "the sidecar looks it up by the driver name"),
        Breakage(description: "a SnapshotMetadata Service that balances across nodes",
                 file: "snapshot-metadata-service.yaml",
                 original: "  internalTrafficPolicy: Local\n",
                 replacement: "",
                 expectedReport: "internalTrafficPolicy must be Local"),
        Breakage(description: "the SnapshotMetadata sidecar without TokenReview",
                 file: "rbac.yaml",
                 original: "resources: [\"tokenreviews\"]",
                 replacement: "resources: [\"tokenreview\"]",
                 expectedReport: "csi-snapshot-metadata needs create on tokenreviews.authentication.k8s.io cluster-wide"),
        Breakage(description: "a CLI pointed at another admin socket",
                 file: "node-daemonset.yaml",
                 original: "              value: unix:///var/lib/strata/admin.sock\n",
                 replacement: "              value: unix:///var/lib/strata/cli.sock\n",
                 expectedReport: "env STRATA_ADMIN_ENDPOINT is not unix:///var/lib/strata/admin.sock"),
        Breakage(description: "a kubectl plugin that names another container",
                 file: "node-daemonset.yaml",
                 original: "        - name: strata-csi\n          image: strata-csi\n",
                 replacement: "        - name: driver\n          image: strata-csi\n",
                 expectedReport: "(the driver container is 'driver')"),
        Breakage(description: "a private key committed under deploy/",
                 file: "snapshot-metadata/snapshotmetadataservice.yaml",
                 original: "  caCert: CA_CERT_BASE64\n",
                 replacement: "  caCert: CA_CERT_BASE64\n# -----BEGIN PRIVATE KEY-----\n",
                 expectedReport: "holds a private key"),
        Breakage(description: "an image without the admin CLI",
                 file: "Containerfile",
                 original: "COPY --from=build /out/strata /usr/local/bin/strata\n",
                 replacement: "",
                 expectedReport: "stage strata-csi: strata is not copied in"),
        Breakage(description: "no keeper stage in the Containerfile",
                 file: "Containerfile",
                 original: "AS strata-fuse-keeper",
                 replacement: "AS keeper",
                 expectedReport: "no stage strata-fuse-keeper"),
        Breakage(description: "driver and keeper images of different versions",
                 file: "kustomization.yaml",
                 original: "    newName: localhost/strata-fuse-keeper\n    newTag: \"0.1.0\"",
                 replacement: "    newName: localhost/strata-fuse-keeper\n    newTag: \"0.2.0\"",
                 expectedReport: "driver and keeper are built together"),
        Breakage(description: "a kubectl plugin that execs without naming the container",
                 file: "kubectl-strata",
                 original: "-c \"$container\" -- strata",
                 replacement: "-- strata",
                 expectedReport: "(the driver container is 'strata-csi')"),
        Breakage(description: "a kubectl plugin that also finds keeper pods",
                 file: "kubectl-strata",
                 original: "selector=app.kubernetes.io/name=strata-csi,app.kubernetes.io/component=node",
                 replacement: "selector=app.kubernetes.io/part-of=strata",
                 expectedReport: "label selector {'app.kubernetes.io/part-of': 'strata'} is not the node DaemonSet's"),
        Breakage(description: "a SnapshotMetadataService field the CRD does not have",
                 file: "snapshot-metadata/snapshotmetadataservice.yaml",
                 original: "  audience: strata-snapshot-metadata\n",
                 replacement: "  audiences: strata-snapshot-metadata\n",
                 expectedReport: "'audiences' was unexpected"),
        Breakage(description: "the keeper given --socket=PATH, a form it does not parse",
                 file: "fuse-keeper-daemonset.yaml",
                 original: "            - --socket\n            - /run/strata/fuse-keeper.sock\n",
                 replacement: "            - --socket=/run/strata/fuse-keeper.sock\n",
                 expectedReport: "strata-fuse-keeper takes exactly `--socket PATH`"),
        Breakage(description: "a peer key readable by every user of the container",
                 file: "node-daemonset.yaml",
                 original: "            secretName: strata-peer-tls\n            defaultMode: 0400\n",
                 replacement: "            secretName: strata-peer-tls\n",
                 expectedReport: "lets others read tls.key: give it defaultMode 0400"),
        Breakage(description: "a rolling update that does not wait for the driver",
                 file: "node-daemonset.yaml",
                 original: "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: healthz\n            periodSeconds: 5\n",
                 replacement: "          readinessProbe:\n            tcpSocket:\n              port: healthz\n            periodSeconds: 5\n",
                 expectedReport: "a rolling update needs a readinessProbe that asks the driver's Probe"),
    ]

    /// Rewrites the file, first proving the original text is there (so a breakage that no
    /// longer matches the manifests fails loudly instead of testing nothing). In place, not
    /// atomically: a new file would lose kubectl-strata's executable bit.
    func apply(in deployDirectory: URL) throws {
        let url = deployDirectory.appending(path: file)
        let text = try String(contentsOf: url, encoding: .utf8)
        try #require(text.contains(original), "\(file) no longer contains \(original.debugDescription)")
        try text.replacingOccurrences(of: original, with: replacement)
            .write(to: url, atomically: false, encoding: .utf8)
    }
}

/// Runs Tests/DeployTests/validate_manifests.py with the python3 on PATH (or $PYTHON3).
enum ManifestValidator {
    static let deployDirectory = Repository.root.appending(path: "deploy").resolvingSymlinksInPath()
    static let script = Repository.root.appending(path: "Tests/DeployTests/validate_manifests.py")

    static func run(deployDirectory: URL, arguments: [String] = []) throws -> ExternalTool.Outcome {
        let python = ProcessInfo.processInfo.environment["PYTHON3"] ?? "python3"
        // No __pycache__ written into the source tree (parallel runs share it).
        var environment = ["PYTHONDONTWRITEBYTECODE": "1"]
        // The strata-csi of this build, so flags are checked against the real `--help` rather than a list.
        if ProcessInfo.processInfo.environment["STRATA_CSI_BINARY"] == nil, let binary = BuildProducts.path(of: "strata-csi") {
            environment["STRATA_CSI_BINARY"] = binary
        }
        return try ExternalTool.outcome(python, [script.path, deployDirectory.path] + arguments, environment: environment)
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
