"""The Secrets the pods mount are made by the admin, never committed: deploy/README.md (or a
page of deploy/docs/) must say how to make each one (name, namespace, keys), and deploy/ must
hold no key material.
"""

import os
import re

from . import documents, facts

_CREATE = re.compile(r"kubectl\b[^\n]*?\bcreate secret (generic|tls) ([a-z0-9.-]+)([^\n]*)")
_KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _commands(text):
    """Every `kubectl ... create secret` command of the README, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [(kind, name, rest, match.group(0)) for match in _CREATE.finditer(joined)
            for kind, name, rest in [match.groups()]]


def check_secrets(deploy_dir, installed, namespace, wanted, findings):
    """`wanted`: {secret name: keys it must hold} for the Secrets the node pod mounts."""
    commands = _commands("\n".join(documents.admin_documents(deploy_dir).values()))
    for name, keys in sorted(wanted.items()):
        made = [c for c in commands if c[1] == name]
        if not findings.check(made, "deploy/README.md", f"no `kubectl create secret` makes "
                              f"{name}, which the node pod mounts"):
            continue
        kind, _, rest, command = made[0]
        findings.check(re.search(rf"(-n |--namespace[= ]){re.escape(namespace)}\b", command),
                       "deploy/README.md", f"the command making {name} does not name namespace "
                       f"{namespace}")
        present = {"tls.crt", "tls.key"} if kind == "tls" else set(
            re.findall(r"--from-file=([\w.-]+)=", rest))
        missing = sorted(set(keys) - present)
        findings.check(not missing, "deploy/README.md", f"the command making {name} gives no "
                       f"{missing}")

    for m in installed:
        if m.kind == "Secret":
            findings.check(not (m.data.get("data") or m.data.get("stringData")), m.where(),
                           "a Secret with contents is committed: admins make their own")
    for directory, _, files in os.walk(deploy_dir):
        for file in files:
            full = os.path.join(directory, file)
            try:
                with open(full, encoding="utf-8", errors="replace") as handle:
                    content = handle.read()
            except OSError:
                continue
            findings.check(not _KEY_MATERIAL.search(content),
                           os.path.relpath(full, os.path.dirname(deploy_dir)),
                           "holds a private key: never commit key material")


def wanted_secrets(peer_secret, snapshot_metadata_secret):
    wanted = {}
    if peer_secret:
        wanted[peer_secret] = facts.PEER_TLS_FILES
    if snapshot_metadata_secret:
        wanted[snapshot_metadata_secret] = ("tls.crt", "tls.key")
    return wanted
