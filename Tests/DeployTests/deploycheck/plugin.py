"""Runs deploy/kubectl-strata against a fake kubectl on PATH that records its arguments, and
checks that it finds the driver pod of the node DaemonSet and runs the CLI in its driver
container: the names in the script must be the names in the manifests.
"""

import os
import shutil
import subprocess
import tempfile

from . import facts
from .podspec import pod_labels, selects

SCRIPT = "kubectl-strata"
# The API access of each kubectl command the plugin runs, for its caller (kubectl's
# pkg/cmd/get lists with a selector; pkg/cmd/exec gets the pod, then creates pods/exec).
_KUBECTL_ACCESS = {
    "get": [("list", "pods")],
    "exec": [("get", "pods"), ("create", "pods/exec")],
}
# Records each call's arguments, one per line, then a line holding only a record separator;
# `get` prints $FAKE_PODS. Bash, not Python: it starts in milliseconds.
_SEPARATOR = "\x1e"
_FAKE_KUBECTL = """#!/usr/bin/env bash
printf '%s\\n' "$@" $'\\x1e' >> "$FAKE_KUBECTL_LOG"
if [ "${1:-}" = get ]; then printf '%s' "${FAKE_PODS:-}"; fi
"""


def _run(script, workdir, arguments, pods, terminal=False):
    """Runs the plugin; with `terminal`, stdin and stdout are a pseudo-terminal."""
    log = os.path.join(workdir, "calls.log")
    if os.path.exists(log):
        os.remove(log)
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("KUBECTL", "STRATA_NAMESPACE")}
    environment.update({"PATH": workdir + os.pathsep + environment.get("PATH", ""),
                        "FAKE_KUBECTL_LOG": log, "FAKE_PODS": pods})
    if terminal:
        controller, device = os.openpty()
        try:
            run = subprocess.run(["bash", script, *arguments], stdin=device, stdout=device,
                                 stderr=subprocess.PIPE, text=True, env=environment, timeout=30)
        finally:
            os.close(device)
            os.close(controller)
    else:
        run = subprocess.run(["bash", script, *arguments], capture_output=True, text=True,
                             env=environment, stdin=subprocess.DEVNULL, timeout=30)
    calls = []
    if os.path.exists(log):
        with open(log, encoding="utf-8") as handle:
            call = []
            for line in handle.read().split("\n"):
                if line == _SEPARATOR:
                    calls.append(call)
                    call = []
                elif line or call:
                    call.append(line)
    return run, calls


def _option(call, *names):
    for index, argument in enumerate(call):
        for name in names:
            if argument == name and index + 1 < len(call):
                return call[index + 1]
            if argument.startswith(name + "="):
                return argument[len(name) + 1:]
    return None


def check_kubectl_plugin(deploy_dir, plugin, findings):
    script = os.path.join(deploy_dir, SCRIPT)
    where = f"deploy/{SCRIPT}"
    if not findings.check(os.path.isfile(script), where, "missing"):
        return
    findings.check(os.access(script, os.X_OK), where, "not executable: kubectl finds only "
                   "executable plugins")
    namespace = plugin.manifest.namespace
    container = plugin.driver.get("name")
    labels = pod_labels(plugin.manifest)
    workdir = tempfile.mkdtemp(prefix="kubectl-strata-")
    try:
        fake = os.path.join(workdir, "kubectl")
        with open(fake, "w", encoding="utf-8") as handle:
            handle.write(_FAKE_KUBECTL)
        os.chmod(fake, 0o755)

        node, arguments = "worker-1.example", ["tree", "--json", "golden image"]
        run, calls = _run(script, workdir, [node, *arguments], "strata-node-x7k2p\n")
        if not findings.check(run.returncode == 0 and len(calls) == 2, where,
                              f"with one pod on the node: exit {run.returncode}, "
                              f"{len(calls)} kubectl calls ({run.stderr.strip()})"):
            return
        get, execute = calls
        findings.check(get[:2] == ["get", "pods"] and _option(get, "-n", "--namespace")
                       == namespace, where, f"does not list pods in {namespace}: {get}")
        selector = dict(pair.split("=", 1) for pair in (_option(get, "-l", "--selector") or
                                                         "").split(",") if "=" in pair)
        selector_of_set = ((plugin.manifest.data.get("spec") or {}).get("selector") or {}).get(
            "matchLabels") or {}
        findings.check(selects(selector, labels) and selects(selector_of_set, selector), where,
                       f"label selector {selector} is not the node DaemonSet's "
                       f"{selector_of_set}")
        fields = (_option(get, "--field-selector") or "").split(",")
        findings.check(f"spec.nodeName={node}" in fields, where,
                       f"does not select the pod by spec.nodeName={node}: {fields}")
        expected = ["exec", "-n", namespace, "strata-node-x7k2p", "-c", container, "--",
                    facts.ADMIN_CLI, *arguments]
        findings.check(execute == expected, where, f"runs {execute}, expected {expected} "
                       f"(the driver container is {container!r})")
        _check_caller_access(deploy_dir, [get, execute], namespace, findings)

        run, calls = _run(script, workdir, [node, "flatten", "vol-1"], "strata-node-x7k2p\n",
                          terminal=True)
        findings.check(run.returncode == 0 and calls and calls[-1][:5] == [
            "exec", "-n", namespace, "-i", "-t"], where, "on a terminal it must ask kubectl "
            f"for one (-i -t), for flatten's progress bar: {calls[-1:] or run.stderr}")

        run, calls = _run(script, workdir, [node, "df"], "")
        findings.check(run.returncode != 0 and len(calls) == 1 and node in run.stderr, where,
                       "with no pod on the node it must fail naming the node, without exec")
        run, calls = _run(script, workdir, [node, "df"], "strata-node-a\nstrata-node-b\n")
        findings.check(run.returncode != 0 and len(calls) == 1, where,
                       "with two pods on the node it must fail without exec")
        for bad in ([], [node], ["--all-namespaces", "ls"], ["../node", "ls"]):
            run, calls = _run(script, workdir, bad, "strata-node-x7k2p\n")
            findings.check(run.returncode != 0 and not calls, where,
                           f"arguments {bad} must be refused before any kubectl call")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def caller_access_sentence(calls, namespace):
    """What deploy/README.md must tell the plugin's users they need, from the calls it made."""
    verbs = {}
    for call in calls:
        for verb, resource in _KUBECTL_ACCESS.get(call[0] if call else "", []):
            verbs.setdefault(resource, [])
            if verb not in verbs[resource]:
                verbs[resource].append(verb)
    parts = [" and ".join(f"`{v}`" for v in sorted(vs)) + f" on `{resource}`"
             for resource, vs in sorted(verbs.items())]
    return f"The caller needs {' and '.join(parts)} in `{namespace}`"


def _check_caller_access(deploy_dir, calls, namespace, findings):
    unknown = [call[0] for call in calls if call and call[0] not in _KUBECTL_ACCESS]
    findings.check(not unknown, f"deploy/{SCRIPT}", f"runs kubectl {unknown}: say in "
                   "deploycheck/plugin.py what access that needs")
    sentence = caller_access_sentence(calls, namespace)
    with open(os.path.join(deploy_dir, "README.md"), encoding="utf-8") as handle:
        readme = " ".join(handle.read().split())
    findings.check(sentence in readme, "deploy/README.md", f"kubectl strata: does not say "
                   f"\"{sentence}\" (what the plugin's kubectl calls need)")


def check_admin_endpoint(plugin, findings):
    """The CLI run by kubectl-strata must find the socket the driver serves its admin API on."""
    from .podspec import Arguments, env_field

    where = f"{plugin.manifest.where()} container {plugin.driver.get('name')}"
    args = Arguments(plugin.driver, where, findings)
    endpoint = args.get("admin-endpoint", facts.ADMIN_ENDPOINT_DEFAULT.format(
        state_dir=args.get("state-dir", facts.STRATA_CSI_DEFAULTS["state-dir"])))
    findings.check(endpoint.startswith("unix:///"), where, f"--admin-endpoint {endpoint} is not "
                   "a unix socket (the admin API must not be reachable over the network)")
    findings.check(env_field(plugin.driver, facts.ADMIN_ENDPOINT_ENV) == ("value", endpoint),
                   where, f"env {facts.ADMIN_ENDPOINT_ENV} is not {endpoint}: `kubectl strata` "
                   "would run the CLI against another socket")
