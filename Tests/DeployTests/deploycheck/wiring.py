"""Cluster-wide cross-references: names that must agree, and the API access each sidecar needs."""

import re

from . import access, facts, volume_modes
from .crd_schemas import CLUSTER_SCOPED

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CLONE_STRATEGY_ANNOTATION = "cdi.kubevirt.io/clone-strategy"
DEFAULT_SNAPSHOT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"


def of_kind(manifests, kind):
    return [m for m in manifests if m.kind == kind]


def check_metadata(manifests, findings, known_namespaces):
    """Names are DNS subdomains; namespaced objects name an existing namespace, others none."""
    seen = set()
    for m in manifests:
        where = m.where()
        findings.check(m.name and len(m.name) <= 253 and _DNS_SUBDOMAIN.match(m.name), where,
                       f"name {m.name!r} is not a DNS subdomain")
        key = (m.api_version, m.kind, m.namespace, m.name)
        findings.check(key not in seen, where, "defined twice")
        seen.add(key)
        if m.kind in CLUSTER_SCOPED:
            findings.check(m.namespace is None, where, "cluster-scoped object has a namespace")
        else:
            findings.check(m.namespace in known_namespaces, where,
                           f"namespace {m.namespace!r} is not created here")


def check_csidriver(manifests, findings):
    """The CSIDriver object, whose name every other reference must equal. Returns the name."""
    drivers = of_kind(manifests, "CSIDriver")
    if not findings.check(len(drivers) == 1, "deploy/", f"expected one CSIDriver, "
                          f"found {len(drivers)}"):
        return None
    driver = drivers[0]
    spec = driver.data.get("spec") or {}
    findings.check(driver.name == facts.DRIVER_NAME, driver.where(),
                   f"name is not {facts.DRIVER_NAME}")
    findings.check(spec.get("attachRequired") is False, driver.where(),
                   "attachRequired must be false: there is no ControllerPublishVolume")
    modes = spec.get("volumeLifecycleModes") or ["Persistent"]
    findings.check("Persistent" in modes, driver.where(), "Persistent lifecycle missing")
    return driver.name


def check_storage_classes(manifests, driver_name, findings):
    classes = of_kind(manifests, "StorageClass")
    findings.check(classes, "deploy/", "no StorageClass")
    for sc in classes:
        where, data = sc.where(), sc.data
        findings.check(data.get("provisioner") == driver_name, where,
                       f"provisioner {data.get('provisioner')!r} is not the CSIDriver "
                       f"{driver_name!r} (CDI would fall back to host-assisted copy)")
        annotations = (data.get("metadata") or {}).get("annotations") or {}
        findings.check(annotations.get(CLONE_STRATEGY_ANNOTATION) == "csi-clone", where,
                       f"annotation {CLONE_STRATEGY_ANNOTATION} is not csi-clone")
        findings.check(data.get("allowVolumeExpansion") is True, where,
                       "allowVolumeExpansion must be true (clones to larger sizes expand)")
        findings.check(data.get("volumeBindingMode") == "WaitForFirstConsumer", where,
                       "volumeBindingMode must be WaitForFirstConsumer: volumes are node-local "
                       "and the provisioner runs with --node-deployment-immediate-binding=false")
        _check_parameters(data.get("parameters") or {}, where, findings)
    return classes


def _check_parameters(parameters, where, findings):
    for key, value in parameters.items():
        if key == "clusterSize":
            low, high = facts.CLUSTER_SIZE_RANGE
            size = int(value) if str(value).isdigit() else -1
            findings.check(low <= size <= high and size & (size - 1) == 0, where,
                           f"clusterSize {value!r} is not a power of two in {low}..{high}")
        elif key == "csi.storage.k8s.io/fstype":
            findings.check(value in facts.FS_TYPES, where, f"fstype {value!r} is not "
                           f"{sorted(facts.FS_TYPES)}")
        else:
            findings.check(key.startswith("csi.storage.k8s.io/"), where,
                           f"parameter {key!r} is unknown: the driver rejects it")


def check_snapshot_classes(manifests, driver_name, findings):
    classes = of_kind(manifests, "VolumeSnapshotClass")
    findings.check(classes, "deploy/", "no VolumeSnapshotClass")
    defaults = 0
    for vsc in classes:
        findings.check(vsc.data.get("driver") == driver_name, vsc.where(),
                       f"driver {vsc.data.get('driver')!r} is not the CSIDriver {driver_name!r}")
        annotations = (vsc.data.get("metadata") or {}).get("annotations") or {}
        defaults += annotations.get(DEFAULT_SNAPSHOT_CLASS_ANNOTATION) == "true"
        for key, value in (vsc.data.get("parameters") or {}).items():
            allowed = facts.SNAPSHOT_CLASS_PARAMETERS.get(key)
            if findings.check(allowed or key.startswith("csi.storage.k8s.io/"), vsc.where(),
                              f"parameter {key!r} is unknown: CreateSnapshot rejects it"):
                findings.check(allowed is None or value in allowed, vsc.where(),
                               f"{key} {value!r} is not one of {sorted(allowed or [])}")
    findings.check(defaults == 1, "deploy/", f"{defaults} default VolumeSnapshotClasses for "
                   f"{driver_name}, expected one")
    return classes


def check_storage_profiles(profiles, classes, snapshot_classes, findings):
    """The CDI StorageProfile patch must name our class and say what CDI cannot guess."""
    findings.check(profiles, "deploy/cdi/", "no StorageProfile")
    class_names = {sc.name: sc for sc in classes}
    for profile in profiles:
        where, spec = profile.where(), profile.data.get("spec") or {}
        sc = class_names.get(profile.name)
        findings.check(sc, where, f"no StorageClass named {profile.name} (a StorageProfile is "
                       "named after its class)")
        sets = spec.get("claimPropertySets") or []
        findings.check(sets, where, "claimPropertySets is empty")
        seen_modes = set()
        accepted = volume_modes.accepted()
        for entry in sets:
            # CDI gives these to every DataVolume that leaves them out: each must be a pair the
            # driver accepts, or those DataVolumes fail at CreateVolume.
            volume_modes.check_pair(where, entry.get("accessModes") or [],
                                    entry.get("volumeMode"), accepted, findings,
                                    "a claimPropertySet")
            seen_modes.add(entry.get("volumeMode"))
        findings.check(seen_modes == {"Block", "Filesystem"}, where,
                       f"claimPropertySets cover {sorted(map(str, seen_modes))}, "
                       "not Block and Filesystem")
        findings.check(spec.get("dataImportCronSourceFormat") == "snapshot", where,
                       "dataImportCronSourceFormat must be snapshot")
        if "snapshotClass" in spec:
            by_name = {v.name: v for v in snapshot_classes}
            chosen = by_name.get(spec["snapshotClass"])
            if findings.check(chosen, where, f"snapshotClass {spec['snapshotClass']} is not "
                              "defined"):
                # DataImportCron snapshots with this class: golden images belong everywhere.
                replicate = (chosen.data.get("parameters") or {}).get("replicate")
                findings.check(replicate == "all-nodes", where, f"snapshotClass "
                               f"{chosen.name} does not pre-place (replicate: all-nodes): the "
                               "first VM on each node would wait for a copy of the golden image")
        if sc and "cloneStrategy" in spec:
            annotation = ((sc.data.get("metadata") or {}).get("annotations") or {}).get(
                CLONE_STRATEGY_ANNOTATION)
            findings.check(spec["cloneStrategy"] == annotation, where,
                           "cloneStrategy disagrees with the StorageClass annotation")


def check_rbac(manifests, plugin, findings):
    """Each sidecar in the node pod is granted every rule it needs through its ServiceAccount."""
    pod_namespace = plugin.manifest.namespace
    account = plugin.pod.get("serviceAccountName", "default")
    where = plugin.manifest.where()
    accounts = {(m.namespace, m.name) for m in of_kind(manifests, "ServiceAccount")}
    findings.check((pod_namespace, account) in accounts, where,
                   f"serviceAccountName {account} is not defined in {pod_namespace}")
    for binding in of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding"):
        ref = binding.data.get("roleRef") or {}
        findings.check(_role_of(manifests, binding), binding.where(),
                       f"roleRef {ref.get('kind')}/{ref.get('name')} is not defined")
        for subject in binding.data.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                findings.check((subject.get("namespace"), subject.get("name")) in accounts,
                               binding.where(), f"subject {subject.get('namespace')}/"
                               f"{subject.get('name')} is not a defined ServiceAccount")

    granted = granted_to(manifests, pod_namespace, account)
    access.check_sidecars(plugin, granted, _allows, findings)
    group, resource, verbs = facts.LEADER_ELECTION_RULE
    for key, namespace in plugin.lease_namespaces.items():
        for verb in sorted(verbs):
            findings.check(_allows(granted, namespace, group, resource, verb), where,
                           f"{key} (--leader-election) needs {verb} on {resource}.{group} in "
                           f"namespace {namespace}; no rule grants it")


def _role_of(manifests, binding):
    ref = binding.data.get("roleRef") or {}
    for role in of_kind(manifests, ref.get("kind")):
        if role.name == ref.get("name") and (ref.get("kind") == "ClusterRole"
                                             or role.namespace == binding.namespace):
            return role
    return None


def granted_to(manifests, namespace, account):
    """The rules bound to ServiceAccount namespace/account: (namespace or None, rule) pairs,
    None for rules granted cluster-wide."""
    granted = []
    for binding in of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding"):
        role = _role_of(manifests, binding)
        binds = any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and s.get("namespace") == namespace
                    for s in binding.data.get("subjects") or [])
        if role and binds:
            granted += [(binding.namespace, rule) for rule in role.data.get("rules") or []]
    return granted


def _allows(granted, namespace, group, resource, verb):
    for scope, rule in granted:
        if scope is not None and scope != namespace:
            continue
        if rule.get("resourceNames"):
            continue
        if (_has(rule.get("apiGroups"), group) and _has(rule.get("resources"), resource)
                and _has(rule.get("verbs"), verb)):
            return True
    return False


def _has(values, wanted):
    values = values or []
    return wanted in values or "*" in values


def check_pod_security(manifests, plugin, findings):
    """A privileged pod needs a namespace whose Pod Security level admits it."""
    namespaces = {m.name: m for m in of_kind(manifests, "Namespace")}
    namespace = namespaces.get(plugin.manifest.namespace)
    if findings.check(namespace, plugin.manifest.where(), "its namespace is not created here"):
        labels = (namespace.data.get("metadata") or {}).get("labels") or {}
        findings.check(labels.get("pod-security.kubernetes.io/enforce") == "privileged",
                       namespace.where(), "pod-security.kubernetes.io/enforce must be privileged "
                       "for the privileged node plugin")


def check_snapshot_controller_access(manifests, findings):
    """deploy/snapshot-controller grants the snapshot-controller's account read access to Nodes."""
    roles = {m.name: m for m in of_kind(manifests, "ClusterRole")}
    granted = False
    for binding in of_kind(manifests, "ClusterRoleBinding"):
        role = roles.get((binding.data.get("roleRef") or {}).get("name"))
        to_account = any(s.get("kind") == "ServiceAccount" and s.get("namespace")
                         for s in binding.data.get("subjects") or [])
        rules = [(None, rule) for rule in (role.data.get("rules") or [])] if role else []
        if to_account and all(_allows(rules, None, "", "nodes", verb)
                              for verb in ("get", "list", "watch")):
            granted = True
    findings.check(granted, "deploy/snapshot-controller/", "no binding grants a ServiceAccount "
                   "get, list and watch on nodes (distributed snapshotting needs them)")
