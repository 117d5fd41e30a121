"""Access modes and volume modes: which pairs the driver accepts, and which pair CDI gives a
DataVolume that leaves one or both out.

The accepted pairs are the fact file's `access_modes` (driver_capabilities.json), which
Tests/CSIDriverTests/CapabilityFactTests.swift holds to VolumeCapabilityRules, so an example
that asks for ReadWriteMany with a Filesystem volume fails here, offline, instead of leaving a
PVC Pending in a cluster with a ProvisioningFailed event.
"""

from . import capabilities

VOLUME_MODES = ("Block", "Filesystem")


def accepted():
    """{volume mode: set of access modes the driver accepts with it}."""
    table = capabilities.load_facts().get("access_modes") or {}
    return {mode: set(names) for mode, names in (table.get("accepted") or {}).items()}


def resolve(storage, cdi_defaults, property_sets):
    """(access modes, volume mode, why) of a claim, or (None, None, why) when nothing decides.

    A PersistentVolumeClaim or a DataVolume's `pvc` stanza gets Kubernetes' default volume
    mode, Filesystem. A DataVolume's `storage` stanza (and a dataVolumeTemplate's, a
    DataImportCron's) is completed by CDI from the class's StorageProfile: the first
    claimPropertySet that agrees with what the stanza does say (the sets are in order of
    preference)."""
    modes = list(storage.get("accessModes") or [])
    volume_mode = storage.get("volumeMode")
    if not cdi_defaults or (modes and volume_mode):
        return modes, volume_mode or "Filesystem", "as written"
    for entry in property_sets or []:
        entry_modes = list(entry.get("accessModes") or [])
        entry_volume = entry.get("volumeMode")
        if modes and not set(modes) <= set(entry_modes):
            continue
        if volume_mode and volume_mode != entry_volume:
            continue
        return modes or entry_modes, volume_mode or entry_volume, "completed from the StorageProfile"
    said = " and ".join(part for part in (
        f"accessModes {modes}" if modes else "", f"volumeMode {volume_mode}" if volume_mode else "")
        if part) or "neither accessModes nor volumeMode"
    return None, None, (f"it gives {said}, and no claimPropertySet of its class's StorageProfile "
                        "agrees with that, so CDI cannot complete the claim")


def check_pair(where, access_modes, volume_mode, table, findings, how="as written"):
    """Each access mode must be one the driver accepts with this volume mode."""
    if not findings.check(volume_mode in table, where, f"volumeMode {volume_mode!r} is not one "
                          f"of {list(VOLUME_MODES)}"):
        return False
    ok = True
    for mode in access_modes:
        allowed = sorted(m for m, modes in table.items() if mode in modes)
        ok &= findings.check(mode in table[volume_mode], where,
                             f"access mode {mode} with volumeMode {volume_mode} ({how}) is "
                             f"refused by the driver (INVALID_ARGUMENT at CreateVolume): "
                             + (f"{mode} is accepted with volumeMode {' or '.join(allowed)} only"
                                if allowed else f"{mode} is not an access mode it accepts"))
    return ok
