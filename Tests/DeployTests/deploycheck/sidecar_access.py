"""The Kubernetes API access each sidecar needs, as facts: which sidecar, read at which release,
under which condition on the driver's capabilities and the sidecar's flags, which rule.

Read from each kubernetes-csi repository at the release tag deploy/ pins: the published RBAC
(deploy/kubernetes/rbac*.yaml, whose comments say when a rule is optional) and the code that
decides which informers and calls happen (`source`). A rule the sidecar needs at start
(an informer it waits for) blocks it entirely when missing, as VolumeAttachments did in issue
22; a rule for a later call fails that call. Both are needs here. Rules upstream grants but the
code does not use under deploy/'s flags are not listed (deploy/ may still grant them).

Conditions are small objects with `holds(capabilities, arguments)` and a `reason` that the
failure message repeats, so a reader sees why the rule is needed. Leases for --leader-election
are facts.LEADER_ELECTION_RULE, checked in the lease's namespace (wiring.check_rbac).
"""


class Advertises:
    def __init__(self, service, capability):
        self.service, self.capability = service, capability
        self.reason = f"the driver advertises {capability}"

    def holds(self, capabilities, arguments):
        return capabilities.has(self.service, self.capability)


class Flag:
    """A boolean flag of the sidecar, with the sidecar's default."""

    def __init__(self, name, default, wanted=True):
        self.name, self.default, self.wanted = name, default, wanted
        self.reason = f"--{name}={str(wanted).lower()}" + (" (the default)"
                                                           if wanted == default else "")

    def holds(self, capabilities, arguments):
        value = arguments.get(self.name)
        enabled = self.default if value is None else value.lower() in ("true", "1", "t")
        return enabled == self.wanted


class FeatureGate:
    """--feature-gates=NAME=true (each gate here is off by default at the release read)."""

    def __init__(self, gate):
        self.gate = gate
        self.reason = f"--feature-gates={gate}=true"

    def holds(self, capabilities, arguments):
        gates = dict(pair.split("=", 1) for pair in (arguments.get("feature-gates") or "")
                     .split(",") if "=" in pair)
        return gates.get(self.gate, "false").lower() == "true"


class Access:
    """One rule: `verbs` on `resource` of `group`, cluster-wide or in the sidecar's namespace."""

    def __init__(self, sidecar, read_at, group, resource, verbs, source, when=(),
                 namespaced=False):
        self.sidecar, self.read_at = sidecar, read_at
        self.group, self.resource, self.verbs = group, resource, frozenset(verbs)
        self.source, self.when, self.namespaced = source, tuple(when), namespaced

    def applies(self, capabilities, arguments):
        return all(condition.holds(capabilities, arguments) for condition in self.when)

    def reason(self):
        return " and ".join(c.reason for c in self.when) or "always"


_PROVISIONER = ("csi-provisioner", "v6.3.0")
_P_RBAC = "external-provisioner deploy/kubernetes/rbac.yaml"
_P_MAIN = "external-provisioner cmd/csi-provisioner/csi-provisioner.go"
_SNAPSHOTTER = ("csi-snapshotter", "v8.6.0")
_S_RBAC = "external-snapshotter deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml"
_S_MAIN = "external-snapshotter cmd/csi-snapshotter/main.go"
_RESIZER = ("csi-resizer", "v2.2.1")
_R_RBAC = "external-resizer deploy/kubernetes/rbac.yaml"
_METADATA = ("csi-snapshot-metadata", "v1.1.0")
_M_CODE = "external-snapshot-metadata pkg/internal/authn, authz, server/grpc"
_EVENTS = ("", "events", {"list", "watch", "create", "update", "patch"})
_SNAPSHOTS = "snapshot.storage.k8s.io"
_GROUPS = "groupsnapshot.storage.k8s.io"
_NOT_NODE_DEPLOYMENT = Flag("node-deployment", False, wanted=False)

TABLE = [
    # external-provisioner: the PV/PVC/StorageClass informers of
    # sig-storage-lib-external-provisioner, and the PVs it creates, patches and deletes.
    Access(*_PROVISIONER, "", "persistentvolumes",
           {"get", "list", "watch", "create", "patch", "delete"}, _P_RBAC),
    Access(*_PROVISIONER, "", "persistentvolumeclaims", {"get", "list", "watch", "update"},
           _P_RBAC),
    Access(*_PROVISIONER, "storage.k8s.io", "storageclasses", {"get", "list", "watch"}, _P_RBAC),
    Access(*_PROVISIONER, *_EVENTS, _P_RBAC),
    # Restores read the VolumeSnapshot and its content (pkg/controller/controller.go); the
    # snapshot-source finalizer (update) and its orphan sweep (list, watch; on by default,
    # --snapshot-orphan-sweep-interval=5m) only with snapshot support
    # (pkg/controller/snapshot_finalizer_controller.go). Without them it logs and carries on.
    Access(*_PROVISIONER, _SNAPSHOTS, "volumesnapshots", {"get", "list", "watch", "update"},
           "external-provisioner pkg/controller/snapshot_finalizer_controller.go",
           when=[Advertises("controller", "CREATE_DELETE_SNAPSHOT")]),
    Access(*_PROVISIONER, _SNAPSHOTS, "volumesnapshotcontents", {"get"},
           "external-provisioner pkg/controller/controller.go",
           when=[Advertises("controller", "CREATE_DELETE_SNAPSHOT")]),
    # Topology: real CSINode and Node informers only outside node deployment; with
    # --node-deployment it serves fixed objects built from NodeGetInfo.
    Access(*_PROVISIONER, "storage.k8s.io", "csinodes", {"get", "list", "watch"}, _P_MAIN,
           when=[Advertises("plugin", "VOLUME_ACCESSIBILITY_CONSTRAINTS"), _NOT_NODE_DEPLOYMENT]),
    Access(*_PROVISIONER, "", "nodes", {"get", "list", "watch"}, _P_MAIN,
           when=[Advertises("plugin", "VOLUME_ACCESSIBILITY_CONSTRAINTS"), _NOT_NODE_DEPLOYMENT]),
    # The VolumeAttachment informer (issue 22): started, and waited for, only when the driver
    # advertises PUBLISH_UNPUBLISH_VOLUME; deletion then waits for attachments to go.
    Access(*_PROVISIONER, "storage.k8s.io", "volumeattachments", {"get", "list", "watch"},
           _P_MAIN, when=[Advertises("controller", "PUBLISH_UNPUBLISH_VOLUME")]),
    # Storage capacity tracking, in the provisioner's namespace.
    Access(*_PROVISIONER, "storage.k8s.io", "csistoragecapacities",
           {"get", "list", "watch", "create", "update", "patch", "delete"}, _P_RBAC,
           when=[Flag("enable-capacity", False)], namespaced=True),
    Access(*_PROVISIONER, "", "pods", {"get"}, _P_RBAC, when=[Flag("enable-capacity", False)],
           namespaced=True),
    Access(*_PROVISIONER, "apps", "replicasets", {"get"}, _P_RBAC,
           when=[Flag("enable-capacity", False)], namespaced=True),
    Access(*_PROVISIONER, "gateway.networking.k8s.io", "referencegrants",
           {"get", "list", "watch"}, _P_MAIN,
           when=[FeatureGate("CrossNamespaceVolumeDataSource")]),

    # csi-snapshotter (the sidecar; the snapshot-controller is installed separately). It
    # exits unless the driver advertises CREATE_DELETE_SNAPSHOT.
    Access(*_SNAPSHOTTER, *_EVENTS, _S_RBAC),
    Access(*_SNAPSHOTTER, _SNAPSHOTS, "volumesnapshotclasses", {"get", "list", "watch"}, _S_RBAC),
    Access(*_SNAPSHOTTER, _SNAPSHOTS, "volumesnapshotcontents",
           {"get", "list", "watch", "update", "patch"}, _S_RBAC),
    Access(*_SNAPSHOTTER, _SNAPSHOTS, "volumesnapshotcontents/status", {"update", "patch"},
           _S_RBAC),
    # Group snapshot informers: only behind the CSIVolumeGroupSnapshot gate (off by default
    # at v8.6.0, pkg/features/features.go), whatever the driver advertises.
    Access(*_SNAPSHOTTER, _GROUPS, "volumegroupsnapshotclasses", {"get", "list", "watch"},
           _S_MAIN, when=[FeatureGate("CSIVolumeGroupSnapshot")]),
    Access(*_SNAPSHOTTER, _GROUPS, "volumegroupsnapshotcontents",
           {"get", "list", "watch", "update", "patch"}, _S_MAIN,
           when=[FeatureGate("CSIVolumeGroupSnapshot")]),
    Access(*_SNAPSHOTTER, _GROUPS, "volumegroupsnapshotcontents/status", {"update", "patch"},
           _S_MAIN, when=[FeatureGate("CSIVolumeGroupSnapshot")]),

    # external-resizer: the resize controller's PV and PVC informers and patches.
    Access(*_RESIZER, "", "persistentvolumes", {"get", "list", "watch", "patch"}, _R_RBAC),
    Access(*_RESIZER, "", "persistentvolumeclaims", {"get", "list", "watch"}, _R_RBAC),
    Access(*_RESIZER, "", "persistentvolumeclaims/status", {"patch"}, _R_RBAC),
    Access(*_RESIZER, *_EVENTS, _R_RBAC),
    Access(*_RESIZER, "", "pods", {"get", "list", "watch"},
           "external-resizer pkg/controller/controller.go",
           when=[Flag("handle-volume-inuse-error", True)]),
    # The modify controller (VolumeAttributesClass informer) runs only for MODIFY_VOLUME.
    Access(*_RESIZER, "storage.k8s.io", "volumeattributesclasses", {"get", "list", "watch"},
           "external-resizer cmd/csi-resizer/main.go, pkg/modifycontroller/controller.go",
           when=[Advertises("controller", "MODIFY_VOLUME")]),

    # csi-snapshot-metadata: what its code calls (it exits unless the driver advertises
    # SNAPSHOT_METADATA_SERVICE), including VolumeSnapshotClass reads that upstream's
    # deploy/snapshot-metadata-cluster-role.yaml lacks.
    Access(*_METADATA, "cbt.storage.k8s.io", "snapshotmetadataservices", {"get"}, _M_CODE),
    Access(*_METADATA, "authentication.k8s.io", "tokenreviews", {"create"}, _M_CODE),
    Access(*_METADATA, "authorization.k8s.io", "subjectaccessreviews", {"create"}, _M_CODE),
    Access(*_METADATA, _SNAPSHOTS, "volumesnapshots", {"get"}, _M_CODE),
    Access(*_METADATA, _SNAPSHOTS, "volumesnapshotcontents", {"get"}, _M_CODE),
    Access(*_METADATA, _SNAPSHOTS, "volumesnapshotclasses", {"get", "list"}, _M_CODE),
]

# Sidecars that call no Kubernetes API (they talk to the driver and to kubelet only), with
# the release that was read: node-driver-registrar and livenessprobe.
NO_API = {"csi-node-driver-registrar": "v2.17.0", "livenessprobe": "v2.19.0"}


def read_at(sidecar):
    """The releases the facts of one sidecar were read at."""
    if sidecar in NO_API:
        return {NO_API[sidecar]}
    return {row.read_at for row in TABLE if row.sidecar == sidecar}


def needs(sidecar, capabilities, arguments):
    """The rules `sidecar` needs, given what the driver advertises and the sidecar's flags."""
    return [row for row in TABLE if row.sidecar == sidecar and row.applies(capabilities,
                                                                            arguments)]
