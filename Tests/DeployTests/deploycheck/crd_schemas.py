"""JSON schemas for the custom resources deploy/ uses, written from their Go API types.

Sources read (facts, not copies): external-snapshotter client/apis/volumesnapshot/v1/types.go;
containerized-data-importer staging/.../core/v1beta1/types.go (StorageProfile, DataVolume,
DataImportCron, DataSource); kubevirt staging/.../core/v1/types.go (VirtualMachine);
external-snapshot-metadata v1.1.0 client/apis/snapshotmetadataservice/v1beta1/types.go and
client/config/crd (SnapshotMetadataService).
Objects are closed (unknown fields are errors) where deploy/ relies on them; the VM's domain,
networks and volume sources stay open, since only the names that tie them together matter here.
Core types inside them ($ref) come from the Kubernetes definitions of the schema set.
"""

_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"


def _core(name):
    return {"$ref": _DEFS + name}


def _obj(properties, required=(), closed=True, **extra):
    schema = {"type": "object", "properties": properties, "additionalProperties": not closed}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _enum(*values):
    return {"type": "string", "enum": list(values)}


def _top(fields, required=("spec",)):
    """A whole object: type and object metadata, plus `fields`."""
    properties = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": _core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        **fields,
    }
    return _obj(properties, ("apiVersion", "kind", "metadata", *required))


_STRING = {"type": "string"}
_NAME = {"type": "string", "minLength": 1}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_OPEN = {"type": "object"}
_ACCESS_MODES = {
    "type": "array", "maxItems": 4,
    "items": _enum("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"),
}
_VOLUME_MODE = _enum("Block", "Filesystem")
_NAMESPACED_NAME = _obj({"namespace": _NAME, "name": _NAME}, ("namespace", "name"))
_EXACTLY_ONE = {"minProperties": 1, "maxProperties": 1}

# --- snapshot.storage.k8s.io/v1 -------------------------------------------------------------

VOLUME_SNAPSHOT_CLASS = _top({
    "driver": _NAME,
    "parameters": _STRING_MAP,
    "deletionPolicy": _enum("Delete", "Retain"),
}, required=("driver", "deletionPolicy"))

VOLUME_SNAPSHOT = _top({"spec": _obj({
    "source": _obj({"persistentVolumeClaimName": _NAME, "volumeSnapshotContentName": _NAME},
                   **_EXACTLY_ONE),
    "volumeSnapshotClassName": _NAME,
}, ("source",))})

# --- cdi.kubevirt.io/v1beta1 ----------------------------------------------------------------

STORAGE_PROFILE = _top({"spec": _obj({
    "cloneStrategy": _enum("copy", "snapshot", "csi-clone"),
    "claimPropertySets": {
        "type": "array", "maxItems": 8,
        "items": _obj({"accessModes": {**_ACCESS_MODES, "minItems": 1}, "volumeMode": _VOLUME_MODE},
                      ("accessModes", "volumeMode")),
    },
    "dataImportCronSourceFormat": _enum("snapshot", "pvc"),
    "snapshotClass": _NAME,
})})

_STORAGE_SPEC = _obj({
    "accessModes": _ACCESS_MODES,
    "selector": _core("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
    "resources": _core("io.k8s.api.core.v1.VolumeResourceRequirements"),
    "volumeName": _STRING,
    "storageClassName": _STRING,
    "volumeMode": _VOLUME_MODE,
    "dataSource": _core("io.k8s.api.core.v1.TypedLocalObjectReference"),
    "dataSourceRef": _core("io.k8s.api.core.v1.TypedObjectReference"),
})

_DATA_VOLUME_SOURCE = _obj({
    "http": _obj({"url": _NAME, "secretRef": _STRING, "certConfigMap": _STRING,
                  "extraHeaders": {"type": "array", "items": _STRING},
                  "secretExtraHeaders": {"type": "array", "items": _STRING},
                  "checksum": _STRING}, ("url",)),
    "registry": _obj({"url": _NAME, "imageStream": _NAME, "pullMethod": _enum("pod", "node"),
                      "secretRef": _STRING, "certConfigMap": _STRING,
                      "platform": _obj({"architecture": _STRING})},
                     oneOf=[{"required": ["url"]}, {"required": ["imageStream"]}]),
    "pvc": _NAMESPACED_NAME,
    "snapshot": _NAMESPACED_NAME,
    "blank": _obj({}),
    "upload": _obj({}),
    "s3": _OPEN, "gcs": _OPEN, "imageio": _OPEN, "vddk": _OPEN,
}, **_EXACTLY_ONE)

DATA_VOLUME_SPEC = _obj({
    "source": _DATA_VOLUME_SOURCE,
    "sourceRef": _obj({"kind": _enum("DataSource"), "namespace": _NAME, "name": _NAME},
                      ("kind", "name")),
    "pvc": _core("io.k8s.api.core.v1.PersistentVolumeClaimSpec"),
    "storage": _STORAGE_SPEC,
    "priorityClassName": _STRING,
    "serviceAccountName": _STRING,
    "contentType": _enum("kubevirt", "archive"),
    "checkpoints": {"type": "array", "items": _obj({"previous": _STRING, "current": _STRING})},
    "finalCheckpoint": {"type": "boolean"},
    "preallocation": {"type": "boolean"},
}, oneOf=[{"required": ["source"]}, {"required": ["sourceRef"]}],
   anyOf=[{"required": ["pvc"]}, {"required": ["storage"]}])

DATA_VOLUME = _top({"spec": DATA_VOLUME_SPEC})

DATA_IMPORT_CRON = _top({"spec": _obj({
    "template": _obj({
        "metadata": _core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        "spec": DATA_VOLUME_SPEC,
    }, ("spec",)),
    # Five cron fields (CDI parses the schedule with robfig/cron's standard parser).
    "schedule": {"type": "string", "pattern": r"^\s*(\S+\s+){4}\S+\s*$"},
    "garbageCollect": _enum("Outdated", "Never"),
    "importsToKeep": {"type": "integer", "minimum": 0},
    "managedDataSource": _NAME,
    "retentionPolicy": _enum("None", "RetainAll"),
    "serviceAccountName": _NAME,
}, ("template", "schedule", "managedDataSource"))})

DATA_SOURCE = _top({"spec": _obj({
    "source": _obj({"pvc": _NAMESPACED_NAME, "snapshot": _NAMESPACED_NAME,
                    "dataSource": _NAMESPACED_NAME}, maxProperties=1),
}, ("source",))})

# --- kubevirt.io/v1 -------------------------------------------------------------------------

_VMI_SPEC = _obj({
    "priorityClassName": _STRING,
    "domain": _obj({"devices": _obj({
        "disks": {"type": "array", "items": _obj({"name": _NAME}, ("name",), closed=False)},
    }, closed=False)}, closed=False),
    "nodeSelector": _STRING_MAP,
    "affinity": _core("io.k8s.api.core.v1.Affinity"),
    "schedulerName": _STRING,
    "serviceAccountName": _STRING,
    "tolerations": {"type": "array", "items": _core("io.k8s.api.core.v1.Toleration")},
    "topologySpreadConstraints": {
        "type": "array", "items": _core("io.k8s.api.core.v1.TopologySpreadConstraint")},
    "evictionStrategy": _enum("None", "LiveMigrate", "LiveMigrateIfPossible", "External"),
    "startStrategy": _enum("Paused"),
    "terminationGracePeriodSeconds": {"type": "integer"},
    "volumes": {"type": "array", "maxItems": 256, "items": _obj({
        "name": _NAME,
        "dataVolume": _obj({"name": _NAME, "hotpluggable": {"type": "boolean"}}, ("name",)),
        "persistentVolumeClaim": _obj({"claimName": _NAME}, ("claimName",), closed=False),
    }, ("name",), closed=False)},
    "livenessProbe": _OPEN, "readinessProbe": _OPEN,
    "hostname": _STRING, "subdomain": _STRING,
    "networks": {"type": "array", "items": _obj({"name": _NAME}, ("name",), closed=False)},
    "dnsPolicy": _STRING,
    "dnsConfig": _core("io.k8s.api.core.v1.PodDNSConfig"),
    "accessCredentials": {"type": "array", "items": _OPEN},
    "architecture": _STRING,
    "resourceClaims": {"type": "array", "items": _OPEN},
    "utilityVolumes": {"type": "array", "items": _OPEN},
}, ("domain",))

VIRTUAL_MACHINE = _top({"spec": _obj({
    "running": {"type": "boolean"},
    "runStrategy": _enum("Always", "Halted", "Manual", "RerunOnFailure", "Once",
                         "WaitAsReceiver"),
    "instancetype": _OPEN,
    "preference": _OPEN,
    "template": _obj({
        "metadata": _core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        "spec": _VMI_SPEC,
    }, ("spec",)),
    "dataVolumeTemplates": {"type": "array", "items": _obj({
        "apiVersion": _STRING,
        "kind": _STRING,
        "metadata": _core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        "spec": DATA_VOLUME_SPEC,
    }, ("metadata", "spec"))},
    "updateVolumesStrategy": _enum("Replacement", "Migration"),
}, ("template",), **{"not": {"required": ["running", "runStrategy"]}})})

# --- cbt.storage.k8s.io/v1beta1 -------------------------------------------------------------

# caCert is `format: byte`: the API server takes only base64 there.
_BASE64 = {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z0-9+/]*={0,2}$"}

SNAPSHOT_METADATA_SERVICE = _top({"spec": _obj({
    "address": _NAME,
    "audience": _NAME,
    "caCert": _BASE64,
}, ("address", "audience", "caCert"))})

CRD_SCHEMAS = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): VOLUME_SNAPSHOT_CLASS,
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): VOLUME_SNAPSHOT,
    ("cdi.kubevirt.io/v1beta1", "StorageProfile"): STORAGE_PROFILE,
    ("cdi.kubevirt.io/v1beta1", "DataVolume"): DATA_VOLUME,
    ("cdi.kubevirt.io/v1beta1", "DataImportCron"): DATA_IMPORT_CRON,
    ("cdi.kubevirt.io/v1beta1", "DataSource"): DATA_SOURCE,
    ("kubevirt.io/v1", "VirtualMachine"): VIRTUAL_MACHINE,
    ("cbt.storage.k8s.io/v1beta1", "SnapshotMetadataService"): SNAPSHOT_METADATA_SERVICE,
}

# Kinds that have no namespace.
CLUSTER_SCOPED = {
    "Namespace", "CSIDriver", "StorageClass", "ClusterRole", "ClusterRoleBinding",
    "VolumeSnapshotClass", "StorageProfile", "PriorityClass", "Node", "SnapshotMetadataService",
}
