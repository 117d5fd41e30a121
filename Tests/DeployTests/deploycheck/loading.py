"""Reads manifests the way `kubectl apply -k` / `kubectl apply -f` would, without a cluster.

Only the kustomization fields deploy/ uses are understood (resources, images); any other field
is reported, so the rendering here cannot silently drift from what kustomize would produce.
"""

import os

import yaml

NOT_OBJECTS = "test-driver.yaml"
KUSTOMIZATION = "kustomization.yaml"
# libyaml's safe loader when PyYAML has it (the same documents, several times faster).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_KNOWN_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images"}


class Manifest:
    """One object from one YAML document of one file."""

    def __init__(self, path, index, data):
        self.path = path
        self.index = index
        self.data = data

    @property
    def kind(self):
        return self.data.get("kind")

    @property
    def api_version(self):
        return self.data.get("apiVersion")

    @property
    def name(self):
        return (self.data.get("metadata") or {}).get("name")

    @property
    def namespace(self):
        return (self.data.get("metadata") or {}).get("namespace")

    def where(self, detail=""):
        label = f"{self.path}#{self.index} {self.kind}/{self.name}"
        return f"{label} {detail}".rstrip()


def load_file(path, findings, root):
    """Every non-empty document of a YAML file, as Manifests."""
    rel = os.path.relpath(path, root)
    try:
        with open(path, encoding="utf-8") as handle:
            documents = list(yaml.load_all(handle, Loader=_SAFE_LOADER))
    except (OSError, yaml.YAMLError) as error:
        findings.fail(rel, f"cannot parse: {error}")
        return []
    manifests = []
    for index, data in enumerate(documents):
        if data is None:
            continue
        if not findings.check(isinstance(data, dict), f"{rel}#{index}",
                              "document is not a mapping"):
            continue
        manifests.append(Manifest(rel, index, data))
    return manifests


def render_kustomization(directory, findings, root):
    """The objects `kubectl apply -k directory` would send, images substituted."""
    where = os.path.relpath(os.path.join(directory, KUSTOMIZATION), root)
    path = os.path.join(directory, KUSTOMIZATION)
    if not findings.check(os.path.isfile(path), where, "missing"):
        return []
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle) or {}
    unknown = set(spec) - _KNOWN_KUSTOMIZATION_FIELDS
    findings.check(not unknown, where, f"fields this check does not render: {sorted(unknown)}")
    findings.check(spec.get("kind") == "Kustomization", where, "kind is not Kustomization")

    listed = spec.get("resources") or []
    manifests = []
    for entry in listed:
        target = os.path.join(directory, entry)
        if os.path.isdir(target):
            manifests += render_kustomization(target, findings, root)
        elif findings.check(os.path.isfile(target), where, f"resource {entry} does not exist"):
            manifests += load_file(target, findings, root)

    # Every manifest beside the kustomization must be applied by it: a file left out of the
    # list is an object users never get. test-driver.yaml is no object: the e2e suite reads it.
    for entry in sorted(os.listdir(directory)):
        if entry.endswith((".yaml", ".yml")) and entry not in (KUSTOMIZATION, NOT_OBJECTS):
            findings.check(entry in listed, where, f"{entry} is not listed in resources")

    images = {image["name"]: image for image in spec.get("images") or []}
    for manifest in manifests:
        for container in _containers(manifest.data):
            override = images.get(container.get("image"))
            if override:
                image = override.get("newName", override["name"])
                if "newTag" in override:
                    image += ":" + str(override["newTag"])
                container["image"] = image
                container["x-kustomize-image-name"] = override["name"]
    for name in images:
        used = any(c.get("x-kustomize-image-name") == name
                   for m in manifests for c in _containers(m.data))
        findings.check(used, where, f"images entry {name} matches no container")
    return manifests


def load_directory(directory, findings, root):
    """Every manifest in the YAML files of a directory (for examples, applied file by file)."""
    manifests = []
    for entry in sorted(os.listdir(directory)):
        if entry.endswith((".yaml", ".yml")):
            manifests += load_file(os.path.join(directory, entry), findings, root)
    return manifests


def strip_render_marks(data):
    """A copy of an object without the marks rendering added (for schema validation)."""
    if isinstance(data, dict):
        return {key: strip_render_marks(value) for key, value in data.items()
                if not key.startswith("x-kustomize")}
    if isinstance(data, list):
        return [strip_render_marks(v) for v in data]
    return data


_WORKLOADS = {"DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"}


def pod_spec(data):
    """The pod spec of a workload object, or None."""
    spec = data.get("spec") or {}
    if data.get("kind") == "Pod":
        return spec
    if data.get("kind") in _WORKLOADS:
        return (spec.get("template") or {}).get("spec")
    return None


def _containers(data):
    spec = pod_spec(data) or {}
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])
