#!/usr/bin/env python3
"""Validates Strata's deploy/ directory offline.

    python3 Tests/DeployTests/validate_manifests.py deploy/ [--strata-help FILE]
        [--capabilities FILE]

Renders deploy/ and deploy/cdi/ as `kubectl apply -k` would, loads deploy/examples/ and the
SnapshotMetadataService template in deploy/snapshot-metadata/, validates every object against
Kubernetes' schemas (kubernetes-validate's strict schemas for core kinds,
deploycheck/crd_schemas.py for CRDs), then checks the cross-references that break an install
without an error at apply time, and runs deploy/kubectl-strata against a fake kubectl. The
strata-csi flags come from --strata-help FILE, else from `$STRATA_CSI_BINARY --help`, else from
the fallback list in deploycheck/facts.py. What the driver advertises comes from
deploycheck/driver_capabilities.json (which a Swift test keeps equal to the driver's answers),
or from --capabilities FILE of the same form.

Needs PyYAML, jsonschema, referencing and kubernetes-validate; no network, no cluster.
Exit status 0 when everything holds, 1 when something does not (each problem on its own line).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from deploycheck import (access, capabilities, documents, e2e_driver, examples, keeper, node,
                             peers, plugin as kubectl_plugin, secrets, sidecar_versions,
                             snapshot_metadata, wiring)
    from deploycheck.driver_flags import driver_flags
    from deploycheck.findings import Findings
    from deploycheck.loading import load_directory, render_kustomization, strip_render_marks
    from deploycheck.schemas import Validator
except ImportError as error:
    sys.exit(f"FAIL {error}: run `python3 -m pip install kubernetes-validate==1.37.0` "
             "(it brings PyYAML, jsonschema and referencing)")


def validate(deploy_dir, help_file=None):
    findings = Findings()
    root = os.path.dirname(os.path.abspath(deploy_dir))
    core = render_kustomization(deploy_dir, findings, root)
    cdi = render_kustomization(os.path.join(deploy_dir, "cdi"), findings, root)
    snapshots = render_kustomization(os.path.join(deploy_dir, "snapshot-controller"), findings,
                                     root)
    examples_dir = os.path.join(deploy_dir, "examples")
    example_files = sorted(f for f in os.listdir(examples_dir) if f.endswith((".yaml", ".yml")))
    sample = load_directory(examples_dir, findings, root)
    templates = load_directory(os.path.join(deploy_dir, "snapshot-metadata"), findings, root)

    validator = Validator()
    for manifest in core + cdi + snapshots + sample:
        validator.validate(manifest, strip_render_marks(manifest.data), findings)
    for manifest in templates:
        validator.validate(manifest, snapshot_metadata.fill_placeholder(manifest.data), findings)

    installed = core + cdi
    namespaces = {m.name for m in installed if m.kind == "Namespace"}
    wiring.check_metadata(installed, findings, namespaces)
    wiring.check_metadata(snapshots, findings, set())
    wiring.check_snapshot_controller_access(snapshots, findings)
    wiring.check_metadata(templates, findings, namespaces)
    wiring.check_metadata(sample, findings, namespaces | {"default"} |
                          {m.name for m in sample if m.kind == "Namespace"})

    driver_name = wiring.check_csidriver(installed, findings)
    classes = wiring.check_storage_classes(installed, driver_name, findings)
    snapshot_classes = wiring.check_snapshot_classes(installed, driver_name, findings)
    wiring.check_storage_profiles(wiring.of_kind(installed, "StorageProfile"), classes,
                                  snapshot_classes, findings)

    manifest = node.find_node_plugin(installed, findings)
    strata_flags = driver_flags(help_file, findings)
    if manifest is not None:
        plugin = node.check_node_plugin(manifest, strata_flags, driver_name, findings)
        wiring.check_rbac(installed, plugin, findings)
        with open(os.path.join(deploy_dir, "README.md"), encoding="utf-8") as handle:
            sidecar_versions.check_pins(plugin, handle.read(), findings)
        wiring.check_pod_security(installed, plugin, findings)
        peer_secret = peers.check_peers(installed, plugin, findings)
        keeper_manifest = keeper.check_keeper(installed, plugin, findings)
        if keeper_manifest is not None:
            access.check_keeper_account(installed, keeper_manifest, wiring.granted_to, findings)
        metadata_secret = snapshot_metadata.check_snapshot_metadata(
            installed, templates, plugin, driver_name, findings)
        secrets.check_secrets(deploy_dir, installed, plugin.manifest.namespace,
                              secrets.wanted_secrets(peer_secret, metadata_secret), findings)
        kubectl_plugin.check_admin_endpoint(plugin, findings)
        kubectl_plugin.check_kubectl_plugin(deploy_dir, plugin, findings)
        e2e_driver.check_test_driver(deploy_dir, installed, plugin, findings)

    profiles = {p.name: (p.data.get("spec") or {}).get("claimPropertySets") or []
                for p in wiring.of_kind(installed, "StorageProfile")}
    examples.check_examples(sample, {sc.name for sc in classes},
                            {v.name for v in snapshot_classes}, findings, profiles)
    documents.check_readme(deploy_dir, example_files, findings)
    documents.check_containerfile(deploy_dir, findings)

    count = len(core) + len(cdi) + len(snapshots) + len(sample) + len(templates)
    summary = (f"{count} objects, Kubernetes schemas {', '.join(validator.versions)}, "
               f"strata-csi flags from {strata_flags.source}")
    return findings, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("deploy_dir", nargs="?", default="deploy")
    parser.add_argument("--strata-help", metavar="FILE",
                        help="a file holding `strata-csi --help` output")
    parser.add_argument("--capabilities", metavar="FILE",
                        help="what the driver advertises, instead of "
                        "deploycheck/driver_capabilities.json")
    options = parser.parse_args()
    if options.capabilities:
        capabilities.use_fact_file(options.capabilities)
    findings, summary = validate(options.deploy_dir.rstrip("/"), options.strata_help)
    for error in findings.errors:
        print(f"FAIL {error}")
    verdict = "ok" if not findings.errors else f"{len(findings.errors)} problems"
    print(f"deploy manifests: {findings.checks} checks, {verdict} ({summary})")
    return 1 if findings.errors else 0


if __name__ == "__main__":
    sys.exit(main())
