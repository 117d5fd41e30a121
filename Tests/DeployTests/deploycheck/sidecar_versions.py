"""Which sidecar releases can talk to the driver, by capability profile, and which Kubernetes
deploy/ needs: facts, and the table deploy/README.md must show.

A sidecar built on csi-lib-utils v0.20 logs every CSI reply through a sanitizer that
dereferences the name of each enum value, and a value its vendored CSI spec lacks has none:
external-provisioner v5.2.0 (CSI spec 1.11) panics on GET_SNAPSHOT (issue 22). So the rule
here is the safe one: a release works with a profile when the CSI spec it vendors knows every
capability the profile makes the driver send in the replies that sidecar asks for. Older
releases may tolerate unknown values (csi-lib-utils v0.22 prints their number), but that is
not what this table promises.
"""

from . import capabilities as driver_capabilities

# The CSI spec version that first has each value (read from the vendored csi.pb.go of sidecar
# releases vendoring consecutive spec versions); every other value the driver sends is in 1.5.
SPEC_SINCE = {
    "GROUP_CONTROLLER_SERVICE": (1, 8),
    "CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT": (1, 8),
    "SNAPSHOT_METADATA_SERVICE": (1, 10),
    "GET_SNAPSHOT": (1, 12),
}
BASE_SPEC = (1, 5)

# The capability lists each sidecar asks the driver for, at the pinned release (its calls of
# GetPluginCapabilities, ControllerGetCapabilities, NodeGetCapabilities). csi-snapshotter
# asks for group controller capabilities only behind --feature-gates=CSIVolumeGroupSnapshot.
READS = {
    "csi-provisioner": ("plugin", "controller"),
    "csi-snapshotter": ("controller",),
    "csi-resizer": ("plugin", "controller", "node"),
    "csi-snapshot-metadata": ("plugin",),
    "csi-node-driver-registrar": (),
    "livenessprobe": (),
}

# The CSI spec each release line vendors, from the go.mod of every release tag: (first
# release with that spec, spec). Releases older than the first row vendor a spec before 1.5.
SPEC_OF_RELEASES = {
    "csi-provisioner": [("v3.0.0", (1, 5)), ("v3.2.0", (1, 6)), ("v3.4.0", (1, 7)),
                        ("v3.5.0", (1, 8)), ("v4.0.0", (1, 9)), ("v5.2.0", (1, 11)),
                        ("v6.0.0", (1, 12))],
    "csi-snapshotter": [("v4.2.0", (1, 5)), ("v6.1.0", (1, 6)), ("v6.2.0", (1, 7)),
                        ("v6.3.0", (1, 8)), ("v7.0.0", (1, 9)), ("v8.2.0", (1, 11)),
                        ("v8.4.0", (1, 12))],
    "csi-resizer": [("v1.3.0", (1, 5)), ("v1.7.0", (1, 7)), ("v1.9.0", (1, 8)),
                    ("v1.10.0", (1, 9)), ("v1.12.0", (1, 10)), ("v1.13.0", (1, 11)),
                    ("v2.0.0", (1, 12))],
    "csi-snapshot-metadata": [("v0.1.0", (1, 11)), ("v0.2.0", (1, 12))],
}

# Sidecars that exit unless the driver advertises a plugin capability.
REQUIRES = {"csi-snapshot-metadata": "SNAPSHOT_METADATA_SERVICE"}

# The oldest Kubernetes deploy/ is validated against (schemas.py) and was run on (issue 22:
# kube-apiserver v1.32.13 with every controller flow). csi-resizer v2.2.1 would need
# storage.k8s.io/v1 VolumeAttributesClass (1.34) only for MODIFY_VOLUME, which the driver does
# not advertise, and turns its VolumeAttributesClass gate off when the API server lacks it
# (cmd/csi-resizer/main.go); csi-provisioner v6.3.0 does the same.
MIN_KUBERNETES = "1.32"

TABLE_SIDECARS = ("csi-provisioner", "csi-snapshotter", "csi-resizer", "csi-snapshot-metadata",
                  "csi-node-driver-registrar", "livenessprobe")


def release(tag):
    return tuple(int(part) for part in tag.lstrip("v").split("."))


def spec_of(sidecar, tag):
    known = [spec for first, spec in SPEC_OF_RELEASES.get(sidecar, []) if release(first)
             <= release(tag)]
    return known[-1] if known else None


def needed_spec(sidecar, advertised):
    spec = BASE_SPEC
    for service in READS.get(sidecar, ()):
        for capability in advertised.by_service.get(service, ()):
            spec = max(spec, SPEC_SINCE.get(capability, BASE_SPEC))
    return spec


def oldest(sidecar, profile):
    """The oldest release that works with `profile` (as deploy/ runs the driver: --mode=all),
    "any" for a sidecar that reads no capability, None when it cannot run with it."""
    advertised = driver_capabilities.advertised(profile, "all", False)
    required = REQUIRES.get(sidecar)
    if required and not advertised.has("plugin", required):
        return None
    if not READS.get(sidecar):
        return "any"
    wanted = needed_spec(sidecar, advertised)
    for first, spec in SPEC_OF_RELEASES[sidecar]:
        if spec >= wanted:
            return first
    return None


def _spec_text(spec):
    return f"{spec[0]}.{spec[1]}" if spec else "-"


def table_rows(pins):
    """deploy/README.md's version table, one markdown line per sidecar: pins is sidecar ->
    the tag deploy/ runs."""
    profiles = driver_capabilities.load_facts()["profiles"]
    rows = []
    for sidecar in TABLE_SIDECARS:
        cells = [sidecar, pins.get(sidecar, "-"), _spec_text(spec_of(sidecar, pins.get(
            sidecar, "v0"))) if sidecar in SPEC_OF_RELEASES else "-"]
        for profile in profiles:
            cells.append(oldest(sidecar, profile) or "does not run")
        rows.append("| " + " | ".join(f"`{c}`" if c.startswith("v") else c for c in cells)
                    + " |")
    return rows


def check_pins(plugin, readme_text, findings):
    """Each pinned sidecar works with the profile deploy/ runs, and README.md's table is the
    one these facts give."""
    where = plugin.manifest.where()
    if plugin.capabilities is None:
        return
    profile = plugin.capabilities.profile
    for sidecar, tag in sorted(plugin.sidecar_tags.items()):
        first = oldest(sidecar, profile)
        if not findings.check(first is not None, where, f"{sidecar} cannot run with "
                              f"--capability-profile={profile} (it needs "
                              f"{REQUIRES.get(sidecar)})"):
            continue
        if first != "any":
            findings.check(tag and release(tag) >= release(first), where,
                           f"{sidecar} {tag} is older than {first}, the oldest whose CSI spec "
                           f"knows what --capability-profile={profile} advertises")
    for row in table_rows(plugin.sidecar_tags):
        findings.check(row in readme_text, "deploy/README.md", f"the version table lacks the "
                       f"row {row} (deploycheck/sidecar_versions.py)")
    findings.check(f"Kubernetes {MIN_KUBERNETES} or newer" in readme_text, "deploy/README.md",
                   f"does not say \"Kubernetes {MIN_KUBERNETES} or newer\"")
