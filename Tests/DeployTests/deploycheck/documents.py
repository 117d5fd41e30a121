"""Checks that deploy/README.md and deploy/Containerfile say what the manifests do."""

import os
import re

from . import facts


def check_readme(deploy_dir, example_files, findings):
    path = os.path.join(deploy_dir, "README.md")
    if not findings.check(os.path.isfile(path), "deploy/README.md", "missing"):
        return
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for name in example_files:
        findings.check(f"examples/{name}" in text, "deploy/README.md",
                       f"does not use examples/{name}")
    for mentioned in sorted(set(re.findall(r"examples/([\w.-]+\.ya?ml)", text))):
        findings.check(mentioned in example_files, "deploy/README.md",
                       f"uses examples/{mentioned}, which does not exist")
    for key, sidecar in facts.SIDECARS.items():
        findings.check(f"{key}:{sidecar.version}" in text, "deploy/README.md",
                       f"does not state the {key} version {sidecar.version}")
    for section in ("Install", "Verify", "Uninstall"):
        findings.check(re.search(rf"^#+ .*{section}", text, re.M | re.I), "deploy/README.md",
                       f"no {section} section")


def check_containerfile(deploy_dir, findings):
    path = os.path.join(deploy_dir, "Containerfile")
    where = "deploy/Containerfile"
    if not findings.check(os.path.isfile(path), where, "missing"):
        return
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    findings.check(len(stages) >= 2, where, "not a multi-stage build")
    findings.check("--static-swift-stdlib" in text, where, "the Swift stdlib is not static")
    for package in ("e2fsprogs", "xfsprogs", "fuse3", "util-linux"):
        findings.check(re.search(rf"\b{package}\b", text), where, f"runtime lacks {package}")
    findings.check(re.search(r"^ENTRYPOINT\s.*strata-csi", text, re.M), where,
                   "ENTRYPOINT does not run strata-csi")
