"""Checks that the examples reference each other and the installed classes correctly, and ask
for access modes and volume modes the driver accepts."""

import re

from . import facts, volume_modes

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]i?|k|m)?$")
_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
            "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
            "Ei": 2**60}


def quantity(text):
    """Bytes in a Kubernetes quantity such as 8Gi, or None if it is not one."""
    match = _QUANTITY.match(str(text))
    if not match or match.group(2) == "m":
        return None
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


class Disk:
    """A volume that an example creates: where it is, how big, and what it is cloned from."""

    def __init__(self, where, namespace, name, spec):
        self.where, self.namespace, self.name = where, namespace, name
        storage = spec.get("storage") or spec.get("pvc") or {}
        self.storage = storage
        # CDI completes a `storage` stanza from the StorageProfile; a `pvc` stanza (and a
        # PersistentVolumeClaim) is taken as written, with Kubernetes' defaults.
        self.cdi_defaults = "storage" in spec
        self.access_modes = self.volume_mode = None
        self.size = quantity(((storage.get("resources") or {}).get("requests") or {}).get(
            "storage", ""))
        self.spec = spec


def check_examples(examples, class_names, snapshot_class_names, findings, profiles=None):
    """profiles: {class name: claimPropertySets} from deploy/cdi/, as CDI applies them."""
    profiles = profiles or {}
    accepted = volume_modes.accepted()
    disks = {}      # (namespace, name) -> Disk: DataVolumes (and the PVCs CDI makes for them)
    snapshots = {}  # (namespace, name) -> VolumeSnapshot manifest
    sources = {}    # (namespace, name) -> size: DataSources kept by a DataImportCron
    namespaces = {m.name for m in examples if m.kind == "Namespace"} | {"default"}
    pending = []    # (Disk) to resolve once everything is indexed
    claims = []     # Pods, whose claims are resolved once everything is indexed
    virtual_machines = []

    for m in examples:
        spec = m.data.get("spec") or {}
        if m.namespace is not None:
            findings.check(m.namespace in namespaces, m.where(),
                           f"namespace {m.namespace} is neither default nor created in examples")
        if m.kind == "DataVolume":
            disk = Disk(m.where(), m.namespace, m.name, spec)
            disks[(m.namespace, m.name)] = disk
            pending.append(disk)
        elif m.kind == "PersistentVolumeClaim":
            disk = Disk(m.where(), m.namespace, m.name, {"pvc": spec})
            disks[(m.namespace, m.name)] = disk
            pending.append(disk)
        elif m.kind == "Pod":
            claims.append(m)
        elif m.kind == "VolumeSnapshot":
            snapshots[(m.namespace, m.name)] = m
            findings.check(spec.get("volumeSnapshotClassName") in snapshot_class_names, m.where(),
                           f"volumeSnapshotClassName {spec.get('volumeSnapshotClassName')} is not "
                           f"one of {sorted(snapshot_class_names)}")
        elif m.kind == "DataImportCron":
            template = Disk(m.where("template"), m.namespace, m.name,
                            (spec.get("template") or {}).get("spec") or {})
            _check_storage(template, class_names, profiles, accepted, findings)
            sources[(m.namespace, spec.get("managedDataSource"))] = template.size
        elif m.kind == "DataSource":
            findings.check((m.namespace, m.name) not in sources, m.where(),
                           "a DataImportCron manages this DataSource: CDI ignores a DataSource "
                           "it did not create, so the cron would never update it")
        elif m.kind == "VirtualMachine":
            for template in spec.get("dataVolumeTemplates") or []:
                name = (template.get("metadata") or {}).get("name")
                disk = Disk(m.where(f"dataVolumeTemplate {name}"), m.namespace, name,
                            template.get("spec") or {})
                disks[(m.namespace, name)] = disk
                pending.append(disk)
            _check_virtual_machine(m, disks, findings)
            virtual_machines.append(m)

    for (namespace, name), m in snapshots.items():
        claim = ((m.data.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
        findings.check((namespace, claim) in disks, m.where(),
                       f"source PVC {namespace}/{claim} is not made by any example")
    for disk in pending:
        _check_storage(disk, class_names, profiles, accepted, findings)
        _check_source(disk, disks, snapshots, sources, findings)
    for m in virtual_machines:
        _check_live_migration(m, disks, findings)
    for pod in claims:
        for volume in (pod.data.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                findings.check((pod.namespace, claim) in disks, pod.where(),
                               f"claim {claim} is not made by any example")


def _check_storage(disk, class_names, profiles, accepted, findings):
    storage = disk.storage
    findings.check(storage.get("storageClassName") in class_names, disk.where,
                   f"storageClassName {storage.get('storageClassName')!r} is not one of "
                   f"{sorted(class_names)}")
    findings.check(disk.size, disk.where, "storage request is missing or not a quantity")
    modes, volume_mode, how = volume_modes.resolve(
        storage, disk.cdi_defaults, profiles.get(storage.get("storageClassName")))
    if findings.check(modes and volume_mode, disk.where, how):
        if volume_modes.check_pair(disk.where, modes, volume_mode, accepted, findings, how):
            disk.access_modes, disk.volume_mode = modes, volume_mode


def _check_source(disk, disks, snapshots, sources, findings):
    spec = disk.spec
    source = spec.get("source") or {}
    origin_size = None
    if "pvc" in source:
        key = (source["pvc"].get("namespace"), source["pvc"].get("name"))
        origin = disks.get(key)
        if findings.check(origin, disk.where, f"clone source PVC {key[0]}/{key[1]} is not made "
                          "by any example"):
            origin_size = origin.size
    elif "snapshot" in source:
        key = (source["snapshot"].get("namespace"), source["snapshot"].get("name"))
        snapshot = snapshots.get(key)
        if findings.check(snapshot, disk.where, f"source snapshot {key[0]}/{key[1]} is not made "
                          "by any example"):
            claim = ((snapshot.data.get("spec") or {}).get("source") or {}).get(
                "persistentVolumeClaimName")
            origin_size = (disks.get((key[0], claim)) or Disk("", "", "", {})).size
    if "sourceRef" in spec:
        ref = spec["sourceRef"]
        key = (ref.get("namespace", disk.namespace), ref.get("name"))
        if findings.check(key in sources, disk.where, f"DataSource {key[0]}/{key[1]} is not "
                          "kept by any DataImportCron in the examples"):
            origin_size = sources[key]
    if origin_size and disk.size:
        findings.check(disk.size >= origin_size, disk.where,
                       f"clone is smaller ({disk.size}) than its source ({origin_size})")


def _check_live_migration(m, disks, findings):
    """KubeVirt live-migrates a VMI only if every PVC it uses is ReadWriteMany; a VM that asks
    to be live-migrated on eviction with any other disk blocks every drain of its node."""
    template_spec = ((m.data.get("spec") or {}).get("template") or {}).get("spec") or {}
    if template_spec.get("evictionStrategy") != "LiveMigrate":
        return
    for volume in template_spec.get("volumes") or []:
        name = (volume.get("dataVolume") or {}).get("name") or \
            (volume.get("persistentVolumeClaim") or {}).get("claimName")
        disk = disks.get((m.namespace, name)) if name else None
        if disk is not None and disk.access_modes is not None:
            findings.check("ReadWriteMany" in disk.access_modes, m.where(),
                           f"evictionStrategy LiveMigrate, but volume {volume.get('name')} "
                           f"({name}) is {', '.join(disk.access_modes)} {disk.volume_mode}: "
                           "KubeVirt migrates only VMs whose every PVC is ReadWriteMany, and a "
                           "VM it cannot migrate under LiveMigrate blocks every drain of its "
                           "node")


def _check_virtual_machine(m, disks, findings):
    template_spec = ((m.data.get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = template_spec.get("volumes") or []
    disk_names = {d.get("name") for d in
                  ((template_spec.get("domain") or {}).get("devices") or {}).get("disks") or []}
    volume_names = {v.get("name") for v in volumes}
    findings.check(disk_names == volume_names, m.where(),
                   f"disks {sorted(map(str, disk_names))} and volumes "
                   f"{sorted(map(str, volume_names))} do not match one to one")
    for volume in volumes:
        if "dataVolume" in volume:
            name = volume["dataVolume"].get("name")
            findings.check((m.namespace, name) in disks, m.where(),
                           f"volume {volume.get('name')} uses DataVolume {name}, which is neither "
                           "a dataVolumeTemplate nor an example DataVolume")
    for key in (template_spec.get("nodeSelector") or {}):
        if key.startswith("topology.strata.csi.dev/"):
            findings.check(key == facts.TOPOLOGY_KEY, m.where(),
                           f"nodeSelector key {key} is not the topology key {facts.TOPOLOGY_KEY}")
