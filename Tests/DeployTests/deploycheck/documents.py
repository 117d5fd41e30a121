"""Checks that deploy/README.md, deploy/docs/ and deploy/Containerfile say what the manifests do."""

import os
import re

from . import facts


def admin_documents(deploy_dir):
    """{path relative to deploy/: text} of deploy/README.md and the pages of deploy/docs/."""
    docs = os.path.join(deploy_dir, "docs")
    pages = sorted(name for name in os.listdir(docs) if name.endswith(".md")) \
        if os.path.isdir(docs) else []
    texts = {}
    for relative in ["README.md"] + [f"docs/{name}" for name in pages]:
        path = os.path.join(deploy_dir, relative)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                texts[relative] = handle.read()
    return texts


def check_readme(deploy_dir, example_files, findings):
    texts = admin_documents(deploy_dir)
    if not findings.check("README.md" in texts, "deploy/README.md", "missing"):
        return
    text = texts["README.md"]
    everything = "\n".join(texts.values())
    for name in example_files:
        findings.check(f"examples/{name}" in everything, "deploy/README.md",
                       f"neither it nor docs/ uses examples/{name}")
    for mentioned in sorted(set(re.findall(r"examples/([\w.-]+\.ya?ml)", everything))):
        findings.check(mentioned in example_files, "deploy/README.md",
                       f"uses examples/{mentioned}, which does not exist")
    # Every page of docs/ is linked from the README, and every link leads to a page.
    pages = {name for name in texts if name.startswith("docs/")}
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
    for page in sorted(pages - linked):
        findings.fail("deploy/README.md", f"does not link {page}")
    for page in sorted(linked - pages):
        findings.fail("deploy/README.md", f"links {page}, which does not exist")
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
