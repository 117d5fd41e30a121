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
    for image, (stage, _) in facts.IMAGES.items():
        if stage != facts.IMAGES[facts.DRIVER_IMAGE][0]:
            findings.check(f"--target {stage}" in text, "deploy/README.md",
                           f"does not say how to build {image} (--target {stage})")
    for section in ("Install", "Verify", "Uninstall", "Upgrade", "Peer certificates",
                    "SnapshotMetadata", "kubectl strata"):
        findings.check(re.search(rf"^#+ .*{section}", text, re.M | re.I), "deploy/README.md",
                       f"no {section} section")


def _stages(text):
    """[(stage name or None, text of the stage)] in order."""
    parts = re.split(r"^(?=FROM\s)", text, flags=re.M)
    stages = []
    for part in parts:
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", part, re.I)
        if match:
            stages.append((match.group(1), part))
    return stages


def check_containerfile(deploy_dir, findings):
    path = os.path.join(deploy_dir, "Containerfile")
    where = "deploy/Containerfile"
    if not findings.check(os.path.isfile(path), where, "missing"):
        return
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stages = _stages(text)
    findings.check(len(stages) >= 2, where, "not a multi-stage build")
    findings.check("--static-swift-stdlib" in text, where, "the Swift stdlib is not static")
    named = dict(stages)
    for image, (stage, executables) in facts.IMAGES.items():
        body = named.get(stage)
        if not findings.check(body, where, f"no stage {stage} (image {image}, built with "
                              f"--target {stage})"):
            continue
        findings.check(re.search(rf"^ENTRYPOINT\s.*/{re.escape(executables[0])}\b", body, re.M),
                       where, f"stage {stage}: ENTRYPOINT does not run {executables[0]}")
        for executable in executables:
            findings.check(re.search(rf"^COPY\s.*/{re.escape(executable)}\s+\S*/"
                                     rf"{re.escape(executable)}\s*$", body, re.M),
                           where, f"stage {stage}: {executable} is not copied in")
            findings.check(re.search(rf"(?<![\w/-]){re.escape(executable)}(?![\w-])",
                                     stages[0][1]), where,
                           f"the build stage does not build {executable}")
    if stages:
        findings.check(stages[-1][0] == facts.IMAGES[facts.DRIVER_IMAGE][0], where,
                       "the last stage (the default target) is not the driver's")
    driver = named.get(facts.IMAGES[facts.DRIVER_IMAGE][0]) or ""
    for package in ("e2fsprogs", "xfsprogs", "fuse3", "util-linux"):
        findings.check(re.search(rf"\b{package}\b", driver), where, f"runtime lacks {package}")
