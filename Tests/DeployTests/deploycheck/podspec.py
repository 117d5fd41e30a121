"""Reading a pod spec the way kubelet and the container runtime would."""

import posixpath
import re

_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class Arguments:
    """A container's `--flag=value` arguments (Go flag syntax; a bare `--flag` is true)."""

    def __init__(self, container, where, findings):
        self.values = {}
        for arg in container.get("args") or []:
            arg = str(arg)
            if not findings.check(arg.startswith("-"), where,
                                  f"argument {arg!r} is not a flag (write --flag=value)"):
                continue
            name, _, value = arg.lstrip("-").partition("=")
            self.values[name] = value if "=" in arg else "true"

    def get(self, name, default=None):
        return self.values.get(name, default)

    def enabled(self, name):
        return self.values.get(name, "false").lower() in ("true", "1", "t")

    def __iter__(self):
        return iter(self.values)


def env_field(container, name):
    """The downward-API fieldPath an env variable is set from, or its literal value."""
    for entry in container.get("env") or []:
        if entry.get("name") == name:
            field = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            return ("field", field) if field else ("value", entry.get("value"))
    return None


def check_variables(container, where, findings):
    """Every $(VAR) in args and command names an env variable of the container."""
    defined = {entry.get("name") for entry in container.get("env") or []}
    for arg in (container.get("command") or []) + (container.get("args") or []):
        for name in _VARIABLE.findall(str(arg)):
            findings.check(name in defined, where, f"{arg!r} uses $({name}), which is not in env")


def variable_field(container, value):
    """For an argument that is exactly $(VAR): the env source of VAR; otherwise None."""
    match = _VARIABLE.fullmatch(value or "")
    return env_field(container, match.group(1)) if match else None


class PodFiles:
    """Maps paths inside a container to the host paths they are mounted from."""

    def __init__(self, pod):
        self.volumes = {volume.get("name"): volume for volume in pod.get("volumes") or []}

    def mount_for(self, container, path):
        """The volumeMount that holds `path` (longest mountPath prefix), or None."""
        path = posixpath.normpath(path)
        best = None
        for mount in container.get("volumeMounts") or []:
            mount_path = posixpath.normpath(mount.get("mountPath", ""))
            inside = path == mount_path or path.startswith(mount_path.rstrip("/") + "/")
            if inside and (best is None or len(mount_path) > len(best["mountPath"])):
                best = mount
        return best

    def host_path(self, container, path):
        """The host path behind `path` in `container`, or None if it is not on a hostPath."""
        mount = self.mount_for(container, path)
        if mount is None:
            return None
        host = (self.volumes.get(mount.get("name")) or {}).get("hostPath")
        if not host:
            return None
        rest = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(mount["mountPath"]))
        base = posixpath.normpath(host["path"])
        return base if rest == "." else posixpath.join(base, rest)

    def propagation(self, container, path):
        mount = self.mount_for(container, path)
        return (mount or {}).get("mountPropagation", "None")


def socket_path(address):
    """A CSI address (unix:///path or /path) as a filesystem path, or None for other schemes."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    return address if address.startswith("/") else None


def port_number(pod, port):
    """A probe's port (number or container port name) as a number, or None."""
    if isinstance(port, int):
        return port
    for container in pod.get("containers") or []:
        for entry in container.get("ports") or []:
            if entry.get("name") == port:
                return entry.get("containerPort")
    return None


def listen_port(endpoint, default=None):
    """The port of a Go listen address such as ':9808' or '0.0.0.0:9808'."""
    if not endpoint:
        return default
    _, _, port = endpoint.rpartition(":")
    return int(port) if port.isdigit() else None


def image_parts(image):
    """('registry/repo', 'tag') of an image reference (tag None when absent)."""
    name = image.partition("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, None


def selects(selector, labels):
    """Whether a non-empty matchLabels-style selector selects an object with `labels`."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def pod_labels(manifest):
    """The pod template labels of a workload."""
    template = (manifest.data.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def container_port(pod, port):
    """A Service targetPort or NetworkPolicy port (number or name) as a container port number."""
    if isinstance(port, int):
        return port
    return port_number(pod, port)


def host_port_pair(address):
    """('host', port) of 'host:port', or (None, None)."""
    host, _, port = str(address or "").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (None, None)


def key_mode_ok(secret_volume):
    """Whether a secret volume's files (a private key among them) are readable by the owner only
    (Kubernetes' default mode is 0644)."""
    modes = [secret_volume.get("defaultMode", 0o644)]
    modes += [item["mode"] for item in secret_volume.get("items") or [] if "mode" in item]
    return all(isinstance(mode, int) and mode & 0o077 == 0 for mode in modes)
