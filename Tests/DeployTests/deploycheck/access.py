"""The API access deploy/'s roles must grant: each sidecar's needs (sidecar_access.py) given
what the driver advertises (capabilities.py), and nothing for the FUSE keeper.
"""

from . import sidecar_access


def check_sidecars(plugin, granted, allows, findings):
    """Each sidecar in the node pod is granted every rule it needs, with the reason."""
    where = plugin.manifest.where()
    if not findings.check(plugin.capabilities, where, "cannot tell what the driver advertises "
                          "from its --capability-profile and --mode"):
        return
    for key, (_, args) in sorted(plugin.sidecars.items()):
        tag = plugin.sidecar_tags.get(key)
        read = sidecar_access.read_at(key)
        if not findings.check(tag in read, where, f"{key} {tag}: its API access was read at "
                              f"{sorted(read)} (deploycheck/sidecar_access.py); re-read its "
                              "RBAC and code for this release"):
            continue
        for row in sidecar_access.needs(key, plugin.capabilities, args):
            namespace = plugin.manifest.namespace if row.namespaced else None
            scope = f"in namespace {namespace}" if namespace else "cluster-wide"
            resource = row.resource + (f".{row.group}" if row.group else "")
            for verb in sorted(row.verbs):
                findings.check(allows(granted, namespace, row.group, row.resource, verb), where,
                               f"{key} needs {verb} on {resource} {scope}; no rule grants it "
                               f"({row.reason()}: {row.source} at {row.read_at}; driver "
                               f"{plugin.capabilities.describe()})")


def check_keeper_account(manifests, keeper_manifest, granted_to, findings):
    """strata-fuse-keeper calls no Kubernetes API: its account gets no token and no role."""
    from .loading import pod_spec

    pod = pod_spec(keeper_manifest.data) or {}
    account = pod.get("serviceAccountName", "default")
    namespace = keeper_manifest.namespace
    where = keeper_manifest.where()
    accounts = {(m.namespace, m.name): m for m in manifests if m.kind == "ServiceAccount"}
    findings.check(account != "default" and (namespace, account) in accounts, where,
                   f"serviceAccountName {account} is not an account of its own in {namespace}")
    token = pod.get("automountServiceAccountToken")
    if token is None and (namespace, account) in accounts:
        token = accounts[(namespace, account)].data.get("automountServiceAccountToken")
    findings.check(token is False, where, "the keeper calls no Kubernetes API: set "
                   "automountServiceAccountToken: false")
    rules = granted_to(manifests, namespace, account)
    findings.check(not rules, where, f"the keeper calls no Kubernetes API, yet {account} is "
                   f"granted {[rule for _, rule in rules][:3]}")
