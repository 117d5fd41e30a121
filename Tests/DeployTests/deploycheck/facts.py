"""Facts the manifests must agree with, each written down once.

The sidecar facts (flags and RBAC rules) were read from the kubernetes-csi repositories at the
pinned release tags: cmd/*/main.go and vendor/github.com/kubernetes-csi/csi-lib-utils/
standardflags for the flags, deploy/kubernetes/rbac*.yaml for the rules. When an image tag in
deploy/ changes, the check below fails until these facts are re-read for the new release.
"""

DRIVER_NAME = "strata.csi.dev"
TOPOLOGY_KEY = "topology.strata.csi.dev/node"
DRIVER_IMAGE = "strata-csi"
SOCKET_FILE = "csi.sock"

# Fallback for `strata-csi --help`, used only when neither STRATA_CSI_BINARY nor a help file
# is given. Keep in step with Sources/strata-csi (the lead's flag list for issue 6).
STRATA_CSI_FLAGS_FALLBACK = {
    "endpoint", "drivername", "nodeid", "state-dir", "mode", "log-level",
    "kubelet-dir", "export-dir", "grace-period", "capability-profile", "controller-expansion",
    "help", "version",
}
STRATA_CSI_MODES = {"controller", "node", "all"}
STRATA_CSI_LOG_LEVELS = {"trace", "debug", "info", "notice", "warning", "error", "critical"}
STRATA_CSI_DEFAULTS = {
    "drivername": DRIVER_NAME,
    "state-dir": "./strata-data",
    "mode": "all",
    "kubelet-dir": "/var/lib/kubelet",
}

# StorageClass parameters the driver accepts (csi.storage.k8s.io/* are accepted and ignored).
CLUSTER_SIZE_RANGE = (4096, 1048576)
FS_TYPES = {"ext4", "xfs"}
SINGLE_NODE_ACCESS_MODES = {"ReadWriteOnce", "ReadWriteOncePod"}

# Flags every kubernetes-csi sidecar gets from k8s.io/component-base/logs (klog).
_LOG_FLAGS = {"v", "vmodule", "logging-format", "log-flush-frequency", "automaxprocs"}
# csi-lib-utils standardflags.RegisterCommonFlags.
_COMMON_FLAGS = {
    "version", "kubeconfig", "csi-address", "leader-election", "leader-election-namespace",
    "leader-election-lease-duration", "leader-election-renew-deadline",
    "leader-election-retry-period", "leader-election-labels", "kube-api-qps", "kube-api-burst",
    "http-endpoint", "metrics-address", "metrics-path",
}

_EVENTS = ("", "events", {"list", "watch", "create", "update", "patch"})
_LEASES = ("coordination.k8s.io", "leases", {"get", "watch", "list", "delete", "update", "create"})


class Sidecar:
    """One kubernetes-csi sidecar at one release: its flags and the API access it needs."""

    def __init__(self, image, version, flags, rules, node_name_env_with=None):
        self.image = image
        self.version = version
        self.flags = flags | _LOG_FLAGS
        self.rules = rules
        # The flag that makes the sidecar read NODE_NAME (distributed mode), if any.
        self.node_name_env_with = node_name_env_with


SIDECARS = {
    "csi-provisioner": Sidecar(
        "registry.k8s.io/sig-storage/csi-provisioner", "v6.3.0",
        _COMMON_FLAGS | {
            "master", "volume-name-prefix", "volume-name-uuid-length", "retry-interval-start",
            "retry-interval-max", "worker-threads", "cloning-protection-threads",
            "snapshot-orphan-sweep-interval", "capacity-threads", "timeout", "strict-topology",
            "immediate-topology", "extra-create-metadata", "enable-pprof", "default-fstype",
            "kube-api-capacity-qps", "kube-api-capacity-burst", "enable-capacity",
            "capacity-for-immediate-binding", "capacity-poll-interval", "capacity-ownerref-level",
            "node-deployment", "node-deployment-immediate-binding", "node-deployment-base-delay",
            "node-deployment-max-delay", "controller-publish-readonly",
            "prevent-volume-mode-conversion", "feature-gates",
        },
        [
            ("", "persistentvolumes", {"get", "list", "watch", "create", "patch", "delete"}),
            ("", "persistentvolumeclaims", {"get", "list", "watch", "update"}),
            ("storage.k8s.io", "storageclasses", {"get", "list", "watch"}),
            _EVENTS,
            ("snapshot.storage.k8s.io", "volumesnapshots", {"get", "list"}),
            ("snapshot.storage.k8s.io", "volumesnapshotcontents", {"get", "list"}),
            ("storage.k8s.io", "csinodes", {"get", "list", "watch"}),
            ("", "nodes", {"get", "list", "watch"}),
        ],
        node_name_env_with="node-deployment",
    ),
    "csi-snapshotter": Sidecar(
        "registry.k8s.io/sig-storage/csi-snapshotter", "v8.6.0",
        _COMMON_FLAGS | {
            "resync-period", "snapshot-name-prefix", "snapshot-name-uuid-length",
            "worker-threads", "timeout", "extra-create-metadata", "retry-interval-start",
            "retry-interval-max", "node-deployment", "groupsnapshot-name-prefix",
            "groupsnapshot-name-uuid-length", "feature-gates",
        },
        [
            _EVENTS,
            ("snapshot.storage.k8s.io", "volumesnapshotclasses", {"get", "list", "watch"}),
            ("snapshot.storage.k8s.io", "volumesnapshotcontents",
             {"get", "list", "watch", "update", "patch"}),
            ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", {"update", "patch"}),
        ],
        node_name_env_with="node-deployment",
    ),
    "csi-resizer": Sidecar(
        "registry.k8s.io/sig-storage/csi-resizer", "v2.2.1",
        _COMMON_FLAGS | {
            "master", "resync-period", "workers", "extra-modify-metadata", "timeout",
            "retry-interval-start", "retry-interval-max", "handle-volume-inuse-error",
            "feature-gates",
        },
        [
            ("", "persistentvolumes", {"get", "list", "watch", "patch"}),
            ("", "persistentvolumeclaims", {"get", "list", "watch"}),
            ("", "pods", {"get", "list", "watch"}),
            ("", "persistentvolumeclaims/status", {"patch"}),
            _EVENTS,
            ("storage.k8s.io", "volumeattributesclasses", {"get", "list", "watch"}),
        ],
    ),
    "csi-node-driver-registrar": Sidecar(
        "registry.k8s.io/sig-storage/csi-node-driver-registrar", "v2.17.0",
        {
            "connection-timeout", "timeout", "csi-address", "plugin-registration-path",
            "kubelet-registration-path", "health-port", "http-endpoint", "version", "mode",
            "enable-pprof",
        },
        [],
    ),
    "livenessprobe": Sidecar(
        "registry.k8s.io/sig-storage/livenessprobe", "v2.19.0",
        {"probe-timeout", "csi-address", "health-port", "metrics-address", "http-endpoint",
         "metrics-path"},
        [],
    ),
}

# Needed by any sidecar started with --leader-election, in its lease namespace.
LEADER_ELECTION_RULE = _LEASES

# Where a sidecar connects when --csi-address is not given.
SIDECAR_DEFAULT_CSI_ADDRESS = "/run/csi/socket"
REGISTRAR_DEFAULT_REGISTRATION_PATH = "/registration"
