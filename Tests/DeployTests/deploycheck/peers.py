"""Checks of the peer wiring (issue 14): how drivers find each other, and who may reach them.

Drivers find their peers through a headless Service resolved by DNS (--peer-dns), talk over
the pod network with mutual TLS (--peer-tls-dir from a Secret), and a NetworkPolicy lets only
the node pods reach the peer port.
"""

from . import facts
from .podspec import (Arguments, container_port, host_port_pair, key_mode_ok, listen_port,
                      pod_labels, selects)

_PEER_FLAGS = ("peer-listen", "peer", "peer-dns")
_SERVICE_SUFFIXES = (".svc", ".svc.cluster.local")


def check_peers(manifests, plugin, findings):
    """Returns the name of the Secret behind --peer-tls-dir (None when peers are off)."""
    where = f"{plugin.manifest.where()} container {plugin.driver.get('name')}"
    args = Arguments(plugin.driver, where, findings)
    if not any(args.get(flag) is not None for flag in _PEER_FLAGS):
        findings.fail(where, "no --peer-listen/--peer-dns: a snapshot could be cloned only on "
                      "the node that took it")
        return None
    findings.check(args.get("peer") is None, where, "--peer is a static list for bare metal: "
                   "pod addresses change, use --peer-dns with the headless Service")
    findings.check(plugin.pod.get("hostNetwork") is not True, where, "the node pod uses the "
                   "host network: the peer port would be open on every node address")
    sends = args.get("peer-max-sends")
    if sends is not None:
        findings.check(sends.isdigit() and int(sends) > 0, where,
                       f"--peer-max-sends={sends} is not a positive number")

    port = listen_port(args.get("peer-listen"))
    findings.check(port, where, f"--peer-listen={args.get('peer-listen')} has no port")
    declared = container_port(plugin.pod, facts.PEER_PORT_NAME)
    findings.check(port and declared == port, where, f"container port "
                   f"{facts.PEER_PORT_NAME!r} ({declared}) is not --peer-listen's port ({port})")
    _check_discovery(manifests, plugin, args.get("peer-dns"), port, where, findings)
    _check_network_policy(manifests, plugin, port, findings)
    wire = _wire_port(args.get("peer-wire-port"), port, where, findings)
    if wire:
        declared = container_port(plugin.pod, facts.PEER_WIRE_PORT_NAME)
        findings.check(declared == wire, where, f"container port {facts.PEER_WIRE_PORT_NAME!r} "
                       f"({declared}) is not the block wire's port ({wire})")
        _check_network_policy(manifests, plugin, wire, findings, what="block wire port")
    return _check_tls_dir(plugin, args.get("peer-tls-dir"), where, findings)


def _wire_port(flag, peer_port, where, findings):
    """The port the driver serves the block wire on (None when off): --peer-wire-port, or the
    peer port + 1."""
    if flag == "off":
        return None
    if flag is None:
        return peer_port + 1 if peer_port else None
    if not findings.check(flag.isdigit() and 0 < int(flag) < 65536, where,
                          f"--peer-wire-port={flag} is not a port or off"):
        return None
    return int(flag)


def _check_discovery(manifests, plugin, dns, port, where, findings):
    host, dns_port = host_port_pair(dns)
    if not findings.check(host, where, f"--peer-dns={dns} is not NAME:PORT"):
        return
    findings.check(dns_port == port, where, f"--peer-dns port {dns_port} is not the port peers "
                   f"listen on ({port})")
    service = service_named(manifests, host, where, "--peer-dns", findings)
    if service is None:
        return
    spec = service.data.get("spec") or {}
    findings.check(spec.get("clusterIP") == "None", service.where(), "not headless "
                   "(clusterIP: None): DNS would give one virtual address, not every peer")
    findings.check(spec.get("publishNotReadyAddresses") is True, service.where(),
                   "publishNotReadyAddresses must be true: a recovering node still serves copies")
    findings.check(selects(spec.get("selector"), pod_labels(plugin.manifest)), service.where(),
                   "its selector does not select the node pods")
    match = [p for p in spec.get("ports") or [] if p.get("port") == dns_port]
    if findings.check(match, service.where(), f"no port {dns_port}"):
        target = container_port(plugin.pod, match[0].get("targetPort", dns_port))
        findings.check(target == port, service.where(), f"port {dns_port} targets {target}, "
                       f"not the peer port {port}")
        findings.check(match[0].get("name") == facts.PEER_PORT_NAME, service.where(),
                       f"port {dns_port} is not named {facts.PEER_PORT_NAME!r}")


def service_named(manifests, host, where, flag, findings):
    """The Service a cluster DNS name (NAME.NAMESPACE.svc[.cluster.local]) points at."""
    for suffix in _SERVICE_SUFFIXES:
        if host.endswith(suffix):
            name, _, namespace = host[:-len(suffix)].partition(".")
            break
    else:
        findings.fail(where, f"{flag} host {host} is not NAME.NAMESPACE.svc")
        return None
    for m in manifests:
        if m.kind == "Service" and m.name == name and m.namespace == namespace:
            return m
    findings.fail(where, f"{flag} names Service {namespace}/{name}, which is not defined")
    return None


def _check_network_policy(manifests, plugin, port, findings, what="peer port"):
    """Some policy isolates the node pods; every rule open to the port admits only them."""
    labels = pod_labels(plugin.manifest)
    policies = [m for m in manifests if m.kind == "NetworkPolicy"
                and m.namespace == plugin.manifest.namespace
                and selects(((m.data.get("spec") or {}).get("podSelector") or {}).get(
                    "matchLabels"), labels)
                and "Ingress" in ((m.data.get("spec") or {}).get("policyTypes") or ["Ingress"])]
    if not findings.check(policies, plugin.manifest.where(), "no NetworkPolicy isolates the "
                          "node pods: any pod could reach the peer port"):
        return
    admitted = False
    for policy in policies:
        for rule in (policy.data.get("spec") or {}).get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(container_port(plugin.pod, p.get("port")) == port
                                 for p in ports):
                continue
            sources = rule.get("from") or []
            only_nodes = sources and all(
                set(source) == {"podSelector"}
                and selects((source["podSelector"] or {}).get("matchLabels"), labels)
                for source in sources)
            findings.check(only_nodes, policy.where(), f"an ingress rule opens the {what} "
                           f"{port} to more than the node pods")
            admitted = admitted or bool(only_nodes)
    findings.check(admitted, plugin.manifest.where(), f"no NetworkPolicy rule lets the node "
                   f"pods reach each other's {what} {port}")


def _check_tls_dir(plugin, directory, where, findings):
    if not findings.check(directory, where, "peers without --peer-tls-dir: the driver refuses "
                          "to start (peers are mutual TLS only)"):
        return None
    mount = plugin.files.mount_for(plugin.driver, directory)
    volume = plugin.files.volumes.get((mount or {}).get("name")) or {}
    secret = volume.get("secret")
    if not findings.check(mount and secret and mount.get("mountPath").rstrip("/") ==
                          directory.rstrip("/"), where,
                          f"--peer-tls-dir {directory} is not the mount of a secret volume"):
        return None
    findings.check(mount.get("readOnly") is True, where, f"{directory} is not mounted readOnly")
    findings.check(key_mode_ok(secret), where, f"the secret volume behind {directory} lets "
                   "others read tls.key: give it defaultMode 0400")
    items = {item.get("key") for item in secret.get("items") or []}
    if items:
        missing = sorted(set(facts.PEER_TLS_FILES) - items)
        findings.check(not missing, where, f"secret items lack {missing}")
    return secret.get("secretName")
