"""Checks of the FUSE keeper wiring (issue 16): the keeper DaemonSet and the driver share one
socket on a host path, the keeper is never rolled, and the driver is rolled only with it.
"""

from . import facts
from .loading import pod_spec
from .podspec import Arguments, PodFiles, image_parts, pod_labels, selects

_SCHEDULING = ("tolerations", "nodeSelector", "affinity")


def _keeper_container(manifest):
    for container in (pod_spec(manifest.data) or {}).get("containers") or []:
        if container.get("x-kustomize-image-name", container.get("image")) == facts.KEEPER_IMAGE:
            return container
    return None


def check_keeper(manifests, plugin, findings):
    """Returns the keeper DaemonSet when the driver is wired to one."""
    where = f"{plugin.manifest.where()} container {plugin.driver.get('name')}"
    socket = Arguments(plugin.driver, where, findings).get("fuse-keeper-socket")
    strategy = (plugin.manifest.data.get("spec") or {}).get("updateStrategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    if socket is None:
        findings.check(kind == "OnDelete", plugin.manifest.where(), f"updateStrategy {kind} "
                       "without --fuse-keeper-socket: a rollout cuts every running volume")
        return
    if kind == "RollingUpdate":
        ready = (plugin.driver.get("readinessProbe") or {}).get("httpGet")
        alive = (plugin.driver.get("livenessProbe") or {}).get("httpGet") or {}
        findings.check(ready and (ready.get("port"), ready.get("path")) == (
            alive.get("port"), alive.get("path")), where, "a rolling update needs a "
            "readinessProbe that asks the driver's Probe (as the livenessProbe does): else it "
            "moves to the next node before this one has resumed its volumes")
    surge = str((strategy.get("rollingUpdate") or {}).get("maxSurge", 0))
    findings.check(surge in ("0", "0%"), plugin.manifest.where(), f"maxSurge {surge}: two "
                   "drivers would serve one node's state directory at once")

    keepers = [m for m in manifests if m.kind == "DaemonSet" and _keeper_container(m)]
    if not findings.check(len(keepers) == 1, "deploy/", f"--fuse-keeper-socket is set but "
                          f"{len(keepers)} DaemonSets run {facts.KEEPER_IMAGE}"):
        return
    keeper = keepers[0]
    pod = pod_spec(keeper.data)
    container = _keeper_container(keeper)
    kwhere = f"{keeper.where()} container {container.get('name')}"

    selector = ((keeper.data.get("spec") or {}).get("selector") or {}).get("matchLabels")
    findings.check(selects(selector, pod_labels(keeper)), keeper.where(),
                   "spec.selector.matchLabels do not select the pod template's labels")
    findings.check(not selects(selector, pod_labels(plugin.manifest)), keeper.where(),
                   "its selector also selects the driver's pods")
    volumes = PodFiles(pod).volumes
    for mount in container.get("volumeMounts") or []:
        findings.check(mount.get("name") in volumes, kwhere,
                       f"volumeMount {mount.get('name')} names no volume")

    driver_host = plugin.files.host_path(plugin.driver, socket)
    findings.check(driver_host, where, f"--fuse-keeper-socket {socket} is not on a hostPath "
                   "volume: the keeper in its own pod could not see it")
    # strata-fuse-keeper parses its own arguments: exactly `--socket PATH`, two of them.
    arguments = [str(a) for a in container.get("args") or []]
    keeper_socket = arguments[1] if len(arguments) == 2 and arguments[0] == "--socket" else None
    findings.check(keeper_socket and keeper_socket.startswith("/"), kwhere, f"arguments "
                   f"{arguments}: strata-fuse-keeper takes exactly `--socket PATH` (two "
                   "arguments, an absolute path)")
    keeper_host = PodFiles(pod).host_path(container, keeper_socket) if keeper_socket else None
    findings.check(keeper_host, kwhere, f"--socket {keeper_socket} is not on a hostPath volume")
    if driver_host and keeper_host:
        findings.check(driver_host == keeper_host, where, f"--fuse-keeper-socket is host "
                       f"{driver_host}, but the keeper listens on host {keeper_host}")
    for files, owner, path, label in ((plugin.files, plugin.driver, socket, where),
                                      (PodFiles(pod), container, keeper_socket, kwhere)):
        mount = files.mount_for(owner, path or "/")
        host = ((files.volumes.get((mount or {}).get("name")) or {}).get("hostPath") or {})
        if host:
            findings.check(host.get("type") == "DirectoryOrCreate", label, f"hostPath "
                           f"{host.get('path')} must be DirectoryOrCreate (either pod may start "
                           "first)")

    kstrategy = ((keeper.data.get("spec") or {}).get("updateStrategy") or {}).get(
        "type", "RollingUpdate")
    findings.check(kstrategy == "OnDelete", keeper.where(), f"updateStrategy {kstrategy}: "
                   "replacing the keeper drops every descriptor it holds (OnDelete, with a drain)")
    for field in _SCHEDULING:
        findings.check(pod.get(field) == plugin.pod.get(field), keeper.where(),
                       f"{field} differs from the driver's: some driver would have no keeper")
    if plugin.pod.get("priorityClassName"):
        findings.check(pod.get("priorityClassName") == plugin.pod.get("priorityClassName"),
                       keeper.where(), "priorityClassName is not the driver's")
    security = container.get("securityContext") or {}
    findings.check(security.get("privileged") is not True, kwhere,
                   "the keeper needs no privilege: descriptors arrive over its socket")
    findings.check(not security.get("runAsNonRoot") and security.get("runAsUser", 0) == 0,
                   kwhere, "the keeper must run as root (its socket admits only uid 0)")
    for mount in container.get("volumeMounts") or []:
        findings.check(not mount.get("mountPath", "").startswith("/dev"), kwhere,
                       f"mounts {mount.get('mountPath')}: the keeper opens no device")
    findings.check("livenessProbe" not in container, kwhere, "a livenessProbe restarts the "
                   "keeper, which drops every descriptor it holds")

    tags = {image_parts(c.get("image", ""))[1] for c in (plugin.driver, container)}
    findings.check(tags == {facts.PACKAGE_VERSION}, kwhere, f"image tags {sorted(map(str, tags))}"
                   f": driver and keeper are built together, tagged {facts.PACKAGE_VERSION}")
    return keeper
