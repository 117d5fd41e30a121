"""Facts the manifests must agree with, each written down once.

The sidecar flags were read from the kubernetes-csi repositories at the pinned release tags:
cmd/*/main.go and vendor/github.com/kubernetes-csi/csi-lib-utils/standardflags. The API access
each sidecar needs is in sidecar_access.py (it depends on what the driver advertises), the
CSI spec each release knows in sidecar_versions.py. When an image tag in deploy/ changes, the
checks fail until these facts are re-read for the new release.
"""

DRIVER_NAME = "strata.csi.dev"
TOPOLOGY_KEY = "topology.strata.csi.dev/node"
DRIVER_IMAGE = "strata-csi"
SOCKET_FILE = "csi.sock"

# Fallback for `strata-csi --help`, used only when neither STRATA_CSI_BINARY nor a help file
# is given. Keep in step with Sources/strata-csi: the flags of main, plus the names fixed for
# issues 14 (peer-*), 15 (admin-endpoint) and 16 (fuse-keeper-socket).
STRATA_CSI_FLAGS_FALLBACK = {
    "endpoint", "drivername", "nodeid", "state-dir", "mode", "log-level",
    "kubelet-dir", "export-dir", "grace-period", "capability-profile", "controller-expansion",
    "chain-depth-soft-limit", "chain-depth-hard-limit", "space-reserve-mib", "metrics-address",
    "peer-listen", "peer", "peer-dns", "peer-tls-dir", "peer-max-sends", "peer-wire-port",
    "admin-endpoint", "fuse-keeper-socket",
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

# The images built from deploy/Containerfile, by kustomize image name: the stage that makes
# each, the executable it runs, and the executables it must also carry.
KEEPER_IMAGE = "strata-fuse-keeper"
IMAGES = {
    DRIVER_IMAGE: ("strata-csi", ("strata-csi", "strata")),
    KEEPER_IMAGE: ("strata-fuse-keeper", ("strata-fuse-keeper",)),
}
# The package version: the tag every image built from this tree carries.
PACKAGE_VERSION = "0.1.0"

# Peer transfer of snapshot layers (issue 14): the files --peer-tls-dir must hold.
PEER_TLS_FILES = ("ca.crt", "tls.crt", "tls.key")
PEER_PORT_NAME = "peer"
# Remote block I/O of ReadWriteMany volumes (the block wire): --peer-wire-port, by default the
# peer port + 1, mutual TLS with the same files.
PEER_WIRE_PORT_NAME = "peer-wire"
# The admin CLI (issue 15): the env variable it reads its endpoint from, and the container
# kubectl-strata runs it in.
ADMIN_ENDPOINT_ENV = "STRATA_ADMIN_ENDPOINT"
ADMIN_ENDPOINT_DEFAULT = "unix://{state_dir}/admin.sock"
ADMIN_CLI = "strata"

# VolumeSnapshotClass parameters the driver accepts, with their values (anything else is
# INVALID_ARGUMENT at CreateSnapshot; Sources/CSIValidation/StorageClassParameters.swift).
# replicate: all-nodes pre-places a snapshot everywhere; none (the default) does not.
SNAPSHOT_CLASS_PARAMETERS = {"replicate": {"all-nodes", "none"}}

# StorageClass parameters the driver accepts (csi.storage.k8s.io/* are accepted and ignored).
CLUSTER_SIZE_RANGE = (4096, 1048576)
FS_TYPES = {"ext4", "xfs"}

# Flags every kubernetes-csi sidecar gets from k8s.io/component-base/logs (klog).
_LOG_FLAGS = {"v", "vmodule", "logging-format", "log-flush-frequency", "automaxprocs"}
# csi-lib-utils standardflags.RegisterCommonFlags.
_COMMON_FLAGS = {
    "version", "kubeconfig", "csi-address", "leader-election", "leader-election-namespace",
    "leader-election-lease-duration", "leader-election-renew-deadline",
    "leader-election-retry-period", "leader-election-labels", "kube-api-qps", "kube-api-burst",
    "http-endpoint", "metrics-address", "metrics-path",
}

_LEASES = ("coordination.k8s.io", "leases", {"get", "watch", "list", "delete", "update", "create"})


# k8s.io/klog/v2 InitFlags, for sidecars that register klog's own flags instead.
_KLOG_FLAGS = {
    "log_dir", "log_file", "log_file_max_size", "logtostderr", "alsologtostderr",
    "legacy_stderr_threshold_behavior", "v", "add_dir_header", "skip_headers", "one_output",
    "skip_log_headers", "stderrthreshold", "alsologtostderrthreshold", "vmodule",
    "log_backtrace_at",
}


class Sidecar:
    """One kubernetes-csi sidecar at one release: its flags. The API access it needs is in
    sidecar_access.py, as it depends on what the driver advertises."""

    def __init__(self, image, version, flags, node_name_env_with=None, log_flags=_LOG_FLAGS):
        self.image = image
        self.version = version
        self.flags = flags | log_flags
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
        node_name_env_with="node-deployment",
    ),
    "csi-resizer": Sidecar(
        "registry.k8s.io/sig-storage/csi-resizer", "v2.2.1",
        _COMMON_FLAGS | {
            "master", "resync-period", "workers", "extra-modify-metadata", "timeout",
            "retry-interval-start", "retry-interval-max", "handle-volume-inuse-error",
            "feature-gates",
        },
    ),
    "csi-node-driver-registrar": Sidecar(
        "registry.k8s.io/sig-storage/csi-node-driver-registrar", "v2.17.0",
        {
            "connection-timeout", "timeout", "csi-address", "plugin-registration-path",
            "kubelet-registration-path", "health-port", "http-endpoint", "version", "mode",
            "enable-pprof",
        },
    ),
    # external-snapshot-metadata (pkg/sidecar/sidecar.go, klog.InitFlags).
    "csi-snapshot-metadata": Sidecar(
        "registry.k8s.io/sig-storage/csi-snapshot-metadata", "v1.1.0",
        {
            "kubeconfig", "csi-address", "version", "timeout", "port", "tls-cert", "tls-key",
            "audience", "max-streaming-duration-min", "kube-api-qps", "kube-api-burst",
            "http-endpoint", "metrics-path", "disable-metrics",
        },
        log_flags=_KLOG_FLAGS,
    ),
    "livenessprobe": Sidecar(
        "registry.k8s.io/sig-storage/livenessprobe", "v2.19.0",
        {"probe-timeout", "csi-address", "health-port", "metrics-address", "http-endpoint",
         "metrics-path"},
    ),
}

# Needed by any sidecar started with --leader-election, in its lease namespace.
LEADER_ELECTION_RULE = _LEASES

# Where a sidecar connects when --csi-address is not given.
SIDECAR_DEFAULT_CSI_ADDRESS = "/run/csi/socket"
REGISTRAR_DEFAULT_REGISTRATION_PATH = "/registration"

# csi-snapshot-metadata defaults (pkg/sidecar/sidecar.go) and the SnapshotMetadataService CRD
# it reads (client/config/crd, group cbt.storage.k8s.io, v1beta1, named after the driver).
SNAPSHOT_METADATA_DEFAULT_PORT = 50051
SNAPSHOT_METADATA_DEFAULT_HTTP = ":8080"
SNAPSHOT_METADATA_API = "cbt.storage.k8s.io/v1beta1"
