"""Validates objects against Kubernetes' published schemas, offline.

Core kinds use the strict JSON schemas that the `kubernetes-validate` package ships (generated
from the Kubernetes OpenAPI; strict means unknown fields are errors), at the oldest and newest
Kubernetes versions we claim. Kinds from CRDs (snapshot, CDI, KubeVirt) are not in those
schemas: crd_schemas.py describes the fields of theirs that deploy/ uses.
"""

import json
import re
from importlib import resources

import jsonschema
from referencing import Registry, Resource

from .crd_schemas import CRD_SCHEMAS
from .sidecar_versions import MIN_KUBERNETES

DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
# The oldest Kubernetes deploy/ claims (sidecar_versions.MIN_KUBERNETES), and the newest.
KUBERNETES_VERSIONS = (MIN_KUBERNETES + ".0", "newest")


class SchemaSet:
    """The strict schemas of one Kubernetes version, loaded once."""

    def __init__(self, version):
        base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
        available = sorted(
            (entry.name for entry in base.iterdir() if entry.name.endswith("-local-strict")),
            key=lambda name: tuple(int(part) for part in name[1:].split("-")[0].split(".")),
        )
        if version == "newest":
            directory = available[-1]
        else:
            directory = f"v{version}-local-strict"
            if directory not in available:
                raise RuntimeError(f"kubernetes-validate has no schemas for {version}")
        self.version = directory[1:].split("-")[0]
        self.directory = base / directory
        definitions = json.loads((self.directory / "_definitions.json").read_text())
        self.registry = Resource.from_contents(definitions) @ Registry()

    def schema_for(self, api_version, kind):
        """The schema of a core kind, or None when this version has no such kind."""
        group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        entry = self.directory / f"{kind.lower()}-{group}.json"
        return json.loads(entry.read_text()) if entry.is_file() else None


def _errors(schema, registry, data):
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(part) for part in error.absolute_path) or "(object)"
        message = error.message if len(error.message) <= 240 else error.message[:240] + "…"
        yield f"{path}: {message}"


class Validator:
    def __init__(self):
        self.sets = [SchemaSet(version) for version in KUBERNETES_VERSIONS]

    def validate(self, manifest, data, findings):
        """Checks one object against every schema that applies to it."""
        key = (manifest.api_version, manifest.kind)
        if not findings.check(all(key), manifest.where(), "apiVersion and kind are required"):
            return
        if key in CRD_SCHEMAS:
            newest = self.sets[-1]
            findings.checks += 1
            for error in _errors(CRD_SCHEMAS[key], newest.registry, data):
                findings.fail(manifest.where(), error)
            return
        known = False
        for schemas in self.sets:
            schema = schemas.schema_for(*key)
            if schema is None:
                findings.fail(manifest.where(), f"no schema for {key[0]} {key[1]} "
                                                f"in Kubernetes {schemas.version}")
                continue
            known = True
            for error in _errors(schema, schemas.registry, data):
                findings.fail(manifest.where(), f"(Kubernetes {schemas.version}) {error}")
        findings.check(known, manifest.where(), "kind unknown to every schema set")

    @property
    def versions(self):
        return [schemas.version for schemas in self.sets]
