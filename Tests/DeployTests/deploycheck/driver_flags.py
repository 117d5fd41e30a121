"""Where the list of `strata-csi` flags comes from: its --help, or the fallback in facts.py."""

import os
import re
import subprocess

from . import facts

_LONG_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def flags_from_help(text):
    return set(_LONG_FLAG.findall(text))


def driver_flags(help_file, findings):
    """(flags, description of their source). A given binary or file that fails is an error."""
    if help_file:
        with open(help_file, encoding="utf-8") as handle:
            flags = flags_from_help(handle.read())
        findings.check(flags, help_file, "no --flags found in the help text")
        return flags, f"help text {help_file}"
    binary = os.environ.get("STRATA_CSI_BINARY")
    if binary:
        try:
            run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
            text = run.stdout + run.stderr
        except OSError as error:
            findings.fail("STRATA_CSI_BINARY", f"cannot run {binary}: {error}")
            return set(), f"{binary} (failed)"
        flags = flags_from_help(text)
        findings.check(run.returncode == 0 and flags, "STRATA_CSI_BINARY",
                       f"`{binary} --help` exited {run.returncode} with no flags")
        return flags, f"`{binary} --help`"
    return set(facts.STRATA_CSI_FLAGS_FALLBACK), "fallback list in deploycheck/facts.py"
