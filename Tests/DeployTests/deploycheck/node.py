"""Checks of the node DaemonSet: the wiring a typo breaks without any error at apply time."""

import posixpath

from . import capabilities, facts
from .loading import pod_spec
from .podspec import (Arguments, PodFiles, check_variables, env_field, image_parts,
                      listen_port, port_number, socket_path, variable_field)

_NODE_NAME_FIELD = ("field", "spec.nodeName")
_CONTROLLER_SIDECARS = ("csi-provisioner", "csi-snapshotter", "csi-resizer")
_REQUIRED_SIDECARS = set(facts.SIDECARS)


def find_node_plugin(manifests, findings):
    """The one DaemonSet running the driver image."""
    plugins = [m for m in manifests if m.kind == "DaemonSet" and _driver_container(m)]
    findings.check(len(plugins) == 1, "deploy/",
                   f"expected one DaemonSet running {facts.DRIVER_IMAGE}, found {len(plugins)}")
    return plugins[0] if plugins else None


def _driver_container(manifest):
    for container in (pod_spec(manifest.data) or {}).get("containers") or []:
        if container.get("x-kustomize-image-name", container.get("image")) == facts.DRIVER_IMAGE:
            return container
    return None


def _sidecar_of(container):
    repository, tag = image_parts(container.get("image", ""))
    for key, sidecar in facts.SIDECARS.items():
        if repository == sidecar.image:
            return key, sidecar, tag
    return None, None, tag


class NodePlugin:
    """What the checks learn about the node pod, for the cluster-wide checks after them."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.pod = pod_spec(manifest.data)
        self.files = PodFiles(self.pod)
        self.driver = _driver_container(manifest)
        self.sidecars = {}          # key -> (container, Arguments)
        self.driver_name = None
        self.host_socket = None
        self.lease_namespaces = {}  # sidecar key -> namespace of its leader-election lease
        self.sidecar_tags = {}      # sidecar key -> image tag
        self.driver_args = None
        self.capabilities = None    # what the driver advertises (capabilities.Capabilities)


def check_node_plugin(manifest, driver_flags, csidriver_name, findings):
    plugin = NodePlugin(manifest)
    _check_pod(plugin, findings)
    _check_driver(plugin, driver_flags, csidriver_name, findings)
    for container in plugin.pod.get("containers") or []:
        if container is not plugin.driver:
            _check_sidecar(plugin, container, findings)
    missing = _REQUIRED_SIDECARS - set(plugin.sidecars)
    findings.check(not missing, manifest.where(), f"sidecars missing: {sorted(missing)}")
    _check_registration(plugin, findings)
    _check_liveness(plugin, findings)
    return plugin


def _check_pod(plugin, findings):
    where, pod, data = plugin.manifest.where(), plugin.pod, plugin.manifest.data
    names = [c.get("name") for c in pod.get("containers") or []]
    findings.check(len(names) == len(set(names)), where, f"duplicate container names {names}")
    ports = [p.get("name") for c in pod.get("containers") or [] for p in c.get("ports") or []
             if p.get("name")]
    findings.check(len(ports) == len(set(ports)), where, f"duplicate port names {ports}")
    for port in ports:
        findings.check(len(port) <= 15, where, f"port name {port!r} is longer than 15")
    selector = ((data.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    labels = (((data.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels") or {}
    findings.check(selector and all(labels.get(k) == v for k, v in selector.items()), where,
                   "spec.selector.matchLabels do not select the pod template's labels")
    for container in pod.get("containers") or []:
        cwhere = f"{where} container {container.get('name')}"
        check_variables(container, cwhere, findings)
        privileged = (container.get("securityContext") or {}).get("privileged") is True
        for mount in container.get("volumeMounts") or []:
            findings.check(mount.get("name") in plugin.files.volumes, cwhere,
                           f"volumeMount {mount.get('name')} names no volume")
            if mount.get("mountPropagation") == "Bidirectional":
                findings.check(privileged, cwhere, "Bidirectional propagation on "
                               f"{mount.get('mountPath')} needs a privileged container")


def _check_driver(plugin, driver_flags, csidriver_name, findings):
    container, files = plugin.driver, plugin.files
    where = f"{plugin.manifest.where()} container {container.get('name')}"
    args = Arguments(container, where, findings)
    for flag in args:
        findings.check(flag in driver_flags.flags, where,
                       f"--{flag} is not a strata-csi flag ({driver_flags.source})")
    plugin.driver_args = args
    plugin.capabilities = capabilities.of_driver(args)

    findings.check((container.get("securityContext") or {}).get("privileged") is True, where,
                   "the driver must be privileged (loop devices, FUSE, mounts)")
    findings.check(files.host_path(container, "/dev") == "/dev", where,
                   "the host's /dev must be mounted at /dev")

    plugin.driver_name = args.get("drivername", facts.STRATA_CSI_DEFAULTS["drivername"])
    findings.check(plugin.driver_name == csidriver_name, where,
                   f"--drivername {plugin.driver_name!r} is not the CSIDriver name "
                   f"{csidriver_name!r}")

    mode = args.get("mode", facts.STRATA_CSI_DEFAULTS["mode"])
    findings.check(mode in driver_flags.allowed("mode", facts.STRATA_CSI_MODES), where,
                   f"--mode={mode} is not a mode")
    has_controller_sidecar = any(
        _sidecar_of(c)[0] in _CONTROLLER_SIDECARS for c in plugin.pod.get("containers") or [])
    if has_controller_sidecar:
        findings.check(mode == "all", where, f"--mode={mode}: the controller sidecars in this "
                       "pod need the Controller and Node services (--mode=all)")
    level = args.get("log-level", "info")
    findings.check(level in driver_flags.allowed("log-level", facts.STRATA_CSI_LOG_LEVELS), where,
                   f"--log-level={level} unknown")
    if args.get("grace-period") is not None:
        findings.check(args.get("grace-period").isdigit(), where, "--grace-period is not seconds")

    # Topology and distributed provisioning compare the node ID with the Node's name.
    findings.check(variable_field(container, args.get("nodeid")) == _NODE_NAME_FIELD, where,
                   "--nodeid must be $(VAR) with VAR from the downward API spec.nodeName "
                   "(the default, the hostname, is the pod's name)")

    endpoint = args.get("endpoint", "")
    path = socket_path(endpoint) if endpoint.startswith("unix://") else None
    if findings.check(path, where, f"--endpoint={endpoint!r} is not unix:///path"):
        plugin.host_socket = files.host_path(container, path)
        findings.check(plugin.host_socket, where, f"socket {path} is not on a hostPath volume")

    kubelet_dir = args.get("kubelet-dir", facts.STRATA_CSI_DEFAULTS["kubelet-dir"])
    findings.check(files.host_path(container, kubelet_dir) == kubelet_dir, where,
                   f"--kubelet-dir {kubelet_dir} must be the host's {kubelet_dir} at the same "
                   "path (kubelet passes host paths)")
    findings.check(files.propagation(container, kubelet_dir) == "Bidirectional", where,
                   f"{kubelet_dir} needs mountPropagation Bidirectional")
    if plugin.host_socket:
        expected = posixpath.join(kubelet_dir, "plugins", plugin.driver_name, facts.SOCKET_FILE)
        findings.check(plugin.host_socket == expected, where,
                       f"host socket {plugin.host_socket} is not {expected}")

    state_dir = args.get("state-dir", facts.STRATA_CSI_DEFAULTS["state-dir"])
    export_dir = args.get("export-dir", posixpath.join(state_dir, "exports"))
    for flag, path in (("state-dir", state_dir), ("export-dir", export_dir)):
        if not findings.check(path.startswith("/"), where, f"--{flag}={path} is not absolute"):
            continue
        findings.check(files.host_path(container, path), where,
                       f"--{flag} {path} is not on a hostPath volume (state would die with "
                       "the pod)")
        findings.check(files.propagation(container, path) == "Bidirectional", where,
                       f"--{flag} {path} needs mountPropagation Bidirectional (the FUSE "
                       "export must be visible to the host)")


def _check_sidecar(plugin, container, findings):
    where = f"{plugin.manifest.where()} container {container.get('name')}"
    key, sidecar, tag = _sidecar_of(container)
    if not findings.check(key, where, f"image {container.get('image')} is neither the driver "
                          "nor a known sidecar"):
        return
    findings.check(tag == sidecar.version, where, f"{key} tag {tag} is not {sidecar.version}, "
                   "the release deploycheck/facts.py describes: re-read its flags and RBAC")
    findings.check(key not in plugin.sidecars, where, f"second {key} container")
    args = Arguments(container, where, findings)
    plugin.sidecars[key] = (container, args)
    plugin.sidecar_tags[key] = tag
    for flag in args:
        findings.check(flag in sidecar.flags, where, f"--{flag} is not a {key} {sidecar.version} "
                       "flag")

    address = socket_path(args.get("csi-address", facts.SIDECAR_DEFAULT_CSI_ADDRESS))
    host = plugin.files.host_path(container, address) if address else None
    findings.check(host and host == plugin.host_socket, where,
                   f"--csi-address {address} is host {host}, not the driver's socket "
                   f"{plugin.host_socket}")

    if sidecar.node_name_env_with:
        distributed = args.enabled(sidecar.node_name_env_with)
        findings.check(distributed, where, f"{key} needs --{sidecar.node_name_env_with}: "
                       "volumes are node-local")
        if distributed:
            findings.check(env_field(container, "NODE_NAME") == _NODE_NAME_FIELD, where,
                           "NODE_NAME must come from the downward API spec.nodeName")
            findings.check(not args.enabled("leader-election"), where,
                           "--leader-election cannot be combined with node deployment")
    if key == "csi-resizer":
        findings.check(args.enabled("leader-election"), where, "the resizer runs in every node "
                       "pod and has no node mode: it needs --leader-election")
    if args.enabled("leader-election"):
        namespace = args.get("leader-election-namespace")
        source = variable_field(container, namespace) if namespace else None
        if namespace is None or source == ("field", "metadata.namespace"):
            namespace = plugin.manifest.namespace
        elif source:
            namespace = source[1]
        plugin.lease_namespaces[key] = namespace


def _check_registration(plugin, findings):
    container, args = plugin.sidecars.get("csi-node-driver-registrar", (None, None))
    if container is None:
        return
    where = f"{plugin.manifest.where()} container {container.get('name')}"
    findings.check(args.get("kubelet-registration-path") == plugin.host_socket, where,
                   f"--kubelet-registration-path {args.get('kubelet-registration-path')} is not "
                   f"the driver's host socket {plugin.host_socket}")
    kubelet_dir = Arguments(plugin.driver, where, findings).get(
        "kubelet-dir", facts.STRATA_CSI_DEFAULTS["kubelet-dir"])
    registration = args.get("plugin-registration-path",
                            facts.REGISTRAR_DEFAULT_REGISTRATION_PATH)
    host = plugin.files.host_path(container, registration)
    expected = posixpath.join(kubelet_dir, "plugins_registry")
    findings.check(host == expected, where,
                   f"registration dir {registration} is host {host}, not {expected}")


def _check_liveness(plugin, findings):
    probe_container, args = plugin.sidecars.get("livenessprobe", (None, None))
    if probe_container is None:
        return
    where = f"{plugin.manifest.where()} container {plugin.driver.get('name')}"
    serving = listen_port(args.get("http-endpoint"), None) or int(args.get("health-port", 9808))
    http = ((plugin.driver.get("livenessProbe") or {}).get("httpGet") or {})
    if findings.check(http, where, "the driver has no httpGet livenessProbe"):
        port = port_number(plugin.pod, http.get("port"))
        findings.check(port == serving, where, f"livenessProbe port {http.get('port')} "
                       f"({port}) is not where livenessprobe listens ({serving})")
        findings.check(http.get("path") == "/healthz", where, "livenessProbe path is not /healthz")
    registrar, rargs = plugin.sidecars.get("csi-node-driver-registrar", (None, None))
    rhttp = ((registrar or {}).get("livenessProbe") or {}).get("httpGet")
    if registrar is not None and rhttp:
        port = port_number(plugin.pod, rhttp.get("port"))
        findings.check(port == listen_port(rargs.get("http-endpoint")), where.replace(
            plugin.driver.get("name"), registrar.get("name")),
            f"livenessProbe port {port} is not the registrar's --http-endpoint")
