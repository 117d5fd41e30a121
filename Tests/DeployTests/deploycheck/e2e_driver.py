"""deploy/test-driver.yaml, the Kubernetes e2e suite's description of the installed driver: every
claim in it must follow from what the driver advertises and from deploy/'s objects, so the
suite tests what Strata offers instead of skipping it or failing on what it never offered.
"""

import os
import re

import yaml

from . import facts, volume_modes

FILE = "test-driver.yaml"
# The capability keys of the suite's DriverInfo (test/e2e/storage/framework/testdriver.go,
# Kubernetes 1.32 to 1.37).
KNOWN = {
    "persistence", "block", "fsGroup", "volumeMountGroup", "exec", "snapshotDataSource",
    "pvcDataSource", "offlineSnapshotClone", "multipods", "RWX", "controllerExpansion",
    "nodeExpansion", "offlineExpansion", "onlineExpansion", "volumeLimits", "singleNodeVolume",
    "topology", "capacity", "FSResizeFromSourceNotSupported", "readWriteOncePod",
    "multiplePVsSameID", "capReadOnlyMany",
}
_TOP_LEVEL = {"ShortName", "StorageClass", "SnapshotClass", "DriverInfo", "InlineVolumes",
              "ClientNodeName", "Timeouts", "PerformanceTestOptions"}
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def _bytes(quantity):
    match = _QUANTITY.match(str(quantity))
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def check_test_driver(deploy_dir, installed, plugin, findings):
    path = os.path.join(deploy_dir, FILE)
    where = f"deploy/{FILE}"
    if not findings.check(os.path.isfile(path), where, "missing: the e2e suite's driver "
                          "description"):
        return
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    caps = plugin.capabilities
    if not findings.check(caps, where, "cannot tell what the driver advertises"):
        return
    findings.check(set(data) <= _TOP_LEVEL, where, f"unknown keys {sorted(set(data) - _TOP_LEVEL)}")
    info = data.get("DriverInfo") or {}
    findings.check(info.get("Name") == plugin.driver_name, where,
                   f"DriverInfo.Name {info.get('Name')!r} is not the driver {plugin.driver_name!r}")
    claimed = info.get("Capabilities") or {}
    findings.check(set(claimed) <= KNOWN, where, f"capabilities the suite does not know: "
                   f"{sorted(set(claimed) - KNOWN)}")

    classes = {m.name: m for m in installed if m.kind == "StorageClass"}
    snapshot_classes = {m.name: m for m in installed if m.kind == "VolumeSnapshotClass"}
    class_name = (data.get("StorageClass") or {}).get("FromExistingClassName")
    sc = classes.get(class_name)
    if findings.check(sc, where, f"StorageClass.FromExistingClassName {class_name!r} is not a "
                      "class deploy/ installs (a class the suite makes is Immediate, which the "
                      "per-node provisioners never bind)"):
        findings.check(sc.data.get("volumeBindingMode") == "WaitForFirstConsumer", where,
                       f"class {class_name} is not WaitForFirstConsumer")
    snapshot_name = (data.get("SnapshotClass") or {}).get("FromExistingClassName")
    findings.check(snapshot_name in snapshot_classes, where, f"SnapshotClass."
                   f"FromExistingClassName {snapshot_name!r} is not a class deploy/ installs")

    sizes = info.get("SupportedSizeRange") or {}
    low, high = _bytes(sizes.get("Min")), _bytes(sizes.get("Max"))
    findings.check(low and high and low <= high and low % 4096 == 0, where, f"SupportedSizeRange "
                   f"{sizes}: sizes are multiples of 4 KiB, Min <= Max")
    fs_types = set(info.get("SupportedFsType") or {})
    findings.check(fs_types and fs_types <= facts.FS_TYPES | {""}, where, f"SupportedFsType "
                   f"{sorted(fs_types)} is not within {sorted(facts.FS_TYPES)} and \"\"")

    csidriver = next((m for m in installed if m.kind == "CSIDriver"), None)
    fs_group_policy = ((csidriver.data.get("spec") or {}) if csidriver else {}).get(
        "fsGroupPolicy", "ReadWriteOnceWithFSType")
    expansion = caps.has("controller", "EXPAND_VOLUME") or caps.has("node", "EXPAND_VOLUME")
    provisioner = plugin.sidecars.get("csi-provisioner", (None, None))[1]
    # The suite gates its multi-node access mode tests on one capability each, whatever the
    # volume mode: RWX guards multivolume's "concurrently access the single volume from pods
    # on different node", run for the Filesystem patterns as well as Block, and
    # capReadOnlyMany guards provisioning's "snapshot data source (ROX mode)", run for the
    # Filesystem patterns. So a claim holds only if the driver accepts the access mode with
    # every volume mode the suite runs: Filesystem always, Block when `block` is claimed.
    # Strata accepts ReadWriteMany and ReadOnlyMany with Block only, so both stay false, and
    # its RWX Block volumes are tested by the Swift suite (ReadWriteManyTests,
    # LiveMigrationTests) instead.
    accepted = volume_modes.accepted()
    suite_modes = ["Filesystem"] + (["Block"] if claimed.get("block") else [])

    def everywhere(mode):
        missing = [v for v in suite_modes if mode not in accepted.get(v, set())]
        why = (f"{mode} is accepted with volumeMode {' and '.join(suite_modes)}" if not missing
               else f"{mode} is refused with volumeMode {' and '.join(missing)}, which the "
               "suite's tests for it also run")
        return not missing, why
    # capability -> (what it must be, why)
    wanted = {
        "snapshotDataSource": (caps.has("controller", "CREATE_DELETE_SNAPSHOT"),
                               "CREATE_DELETE_SNAPSHOT"),
        "pvcDataSource": (caps.has("controller", "CLONE_VOLUME"), "CLONE_VOLUME"),
        "nodeExpansion": (caps.has("node", "EXPAND_VOLUME"), "node EXPAND_VOLUME"),
        "controllerExpansion": (expansion and bool(sc and sc.data.get("allowVolumeExpansion")),
                                "EXPAND_VOLUME and allowVolumeExpansion"),
        "topology": (caps.has("plugin", "VOLUME_ACCESSIBILITY_CONSTRAINTS"),
                     "VOLUME_ACCESSIBILITY_CONSTRAINTS"),
        "volumeMountGroup": (caps.has("node", "VOLUME_MOUNT_GROUP"), "VOLUME_MOUNT_GROUP"),
        "fsGroup": (fs_group_policy in ("File", "ReadWriteOnceWithFSType"),
                    f"CSIDriver fsGroupPolicy {fs_group_policy}"),
        "readWriteOncePod": (caps.has("controller", "SINGLE_NODE_MULTI_WRITER"),
                             "SINGLE_NODE_MULTI_WRITER (single-writer access modes)"),
        "RWX": everywhere("ReadWriteMany"),
        "capReadOnlyMany": everywhere("ReadOnlyMany"),
        "capacity": (bool(provisioner and provisioner.enabled("enable-capacity"))
                     and caps.has("controller", "GET_CAPACITY"),
                     "GET_CAPACITY and csi-provisioner --enable-capacity"),
    }
    for key, (value, why) in wanted.items():
        findings.check(bool(claimed.get(key, False)) == value, where,
                       f"Capabilities.{key}: {claimed.get(key, False)}, but {why} says {value}")
    if claimed.get("topology"):
        findings.check(info.get("TopologyKeys") == [facts.TOPOLOGY_KEY], where,
                       f"TopologyKeys {info.get('TopologyKeys')} is not [{facts.TOPOLOGY_KEY}]")
        findings.check(info.get("NumAllowedTopologies", 1) == 1, where,
                       "NumAllowedTopologies must be 1: a volume lives on one node")
