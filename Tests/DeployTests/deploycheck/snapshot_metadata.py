"""Checks of the SnapshotMetadata wiring (issue 15): the external-snapshot-metadata sidecar,
its TLS Secret, the Service backup tools dial, and the SnapshotMetadataService that names it.
"""

from . import facts
from .peers import service_named
from .podspec import (Arguments, container_port, host_port_pair, key_mode_ok, listen_port,
                      pod_labels, selects)

SIDECAR = "csi-snapshot-metadata"
# deploy/snapshot-metadata/ holds the SnapshotMetadataService with this where the admin's CA
# goes; the validator puts a valid base64 there before checking the schema.
CA_PLACEHOLDER = "CA_CERT_BASE64"


def fill_placeholder(data):
    """A copy of a SnapshotMetadataService template with a syntactically valid caCert."""
    spec = dict(data.get("spec") or {})
    if spec.get("caCert") == CA_PLACEHOLDER:
        spec["caCert"] = "Q0EK"
    return {**data, "spec": spec}


def check_snapshot_metadata(installed, templates, plugin, driver_name, findings):
    """Returns the name of the sidecar's TLS Secret (None when there is no sidecar)."""
    container, args = plugin.sidecars.get(SIDECAR, (None, None))
    if container is None:
        return None
    where = f"{plugin.manifest.where()} container {container.get('name')}"
    dwhere = f"{plugin.manifest.where()} container {plugin.driver.get('name')}"
    profile = Arguments(plugin.driver, dwhere, findings).get("capability-profile", "current")
    findings.check(profile == "current", dwhere, f"--capability-profile={profile} hides "
                   f"SNAPSHOT_METADATA_SERVICE: the {SIDECAR} sidecar exits without it")

    port = int(args.get("port", facts.SNAPSHOT_METADATA_DEFAULT_PORT))
    declared = {p.get("containerPort") for p in container.get("ports") or []}
    findings.check(port in declared, where, f"--port {port} is not a container port")
    secret = _check_tls(plugin, container, args, where, findings)
    _check_ports_unique(plugin, findings)

    services = [m for m in templates if m.kind == "SnapshotMetadataService"]
    if not findings.check(len(services) == 1, "deploy/snapshot-metadata/", f"expected one "
                          f"SnapshotMetadataService, found {len(services)}"):
        return secret
    sms = services[0]
    spec = sms.data.get("spec") or {}
    findings.check(sms.api_version == facts.SNAPSHOT_METADATA_API, sms.where(),
                   f"apiVersion is not {facts.SNAPSHOT_METADATA_API}, the CRD {SIDECAR} "
                   f"{facts.SIDECARS[SIDECAR].version} reads")
    findings.check(sms.name == driver_name, sms.where(), f"the sidecar looks it up by the "
                   f"driver name {driver_name!r}")
    findings.check(spec.get("caCert") == CA_PLACEHOLDER, sms.where(), "caCert must stay the "
                   f"placeholder {CA_PLACEHOLDER}: it is the admin's CA, filled in at apply time")
    audience = args.get("audience")
    if audience is not None:
        findings.check(audience == spec.get("audience"), where, f"--audience {audience} is not "
                       f"the SnapshotMetadataService audience {spec.get('audience')}")

    host, service_port = host_port_pair(spec.get("address"))
    if not findings.check(host, sms.where(), f"address {spec.get('address')} is not HOST:PORT"):
        return secret
    service = service_named(installed, host, sms.where(), "address", findings)
    if service is None:
        return secret
    sspec = service.data.get("spec") or {}
    findings.check(selects(sspec.get("selector"), pod_labels(plugin.manifest)), service.where(),
                   "its selector does not select the node pods")
    findings.check(sspec.get("internalTrafficPolicy") == "Local", service.where(),
                   "internalTrafficPolicy must be Local: each node's driver answers only for "
                   "the snapshots it holds, so a client must reach its own node's sidecar")
    match = [p for p in sspec.get("ports") or [] if p.get("port") == service_port]
    if findings.check(match, service.where(), f"no port {service_port} (the address's)"):
        target = container_port(plugin.pod, match[0].get("targetPort", service_port))
        findings.check(target == port, service.where(), f"port {service_port} targets {target}, "
                       f"not the sidecar's --port {port}")
    return secret


def _check_tls(plugin, container, args, where, findings):
    names = set()
    for flag in ("tls-cert", "tls-key"):
        path = args.get(flag)
        if not findings.check(path, where, f"--{flag} is required (the sidecar serves TLS only)"):
            continue
        mount = plugin.files.mount_for(container, path)
        secret = (plugin.files.volumes.get((mount or {}).get("name")) or {}).get("secret")
        if findings.check(secret, where, f"--{flag} {path} is not on a secret volume"):
            names.add(secret.get("secretName"))
            findings.check(mount.get("readOnly") is True, where, f"{mount.get('mountPath')} is "
                           "not mounted readOnly")
            findings.check(key_mode_ok(secret), where, f"the secret volume behind --{flag} lets "
                           "others read the key: give it defaultMode 0400")
    findings.check(len(names) <= 1, where, f"certificate and key come from different Secrets "
                   f"{sorted(map(str, names))}")
    return next(iter(names), None)


def _check_ports_unique(plugin, findings):
    """Containers of a pod share one network: two listening on one port is a crash loop."""
    listening = {}
    for container in plugin.pod.get("containers") or []:
        name = container.get("name")
        args = Arguments(container, plugin.manifest.where(), findings)
        ports = [listen_port(args.get(flag)) for flag in
                 ("http-endpoint", "metrics-address", "peer-listen") if args.get(flag)]
        if name == SIDECAR:
            ports += [int(args.get("port", facts.SNAPSHOT_METADATA_DEFAULT_PORT)),
                      listen_port(args.get("http-endpoint", facts.SNAPSHOT_METADATA_DEFAULT_HTTP))]
        for port in {p for p in ports if p}:
            other = listening.setdefault(port, name)
            findings.check(other == name, plugin.manifest.where(), f"containers {other} and "
                           f"{name} both listen on port {port}")
