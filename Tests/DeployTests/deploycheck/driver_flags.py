"""Where the list of `strata-csi` flags comes from: its --help, or the fallback in facts.py."""

import os
import re
import subprocess

from . import facts

_LONG_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
# ArgumentParser lists an enum option's values as "(values: a, b, c; default: a)".
_VALUES = re.compile(r"--([a-z][a-z0-9-]*) <[^>]*>((?:(?!--[a-z]).)*?)\(values: ([^;)]*)")


class DriverFlags:
    """The flags of strata-csi, the values its enum flags accept, and where that came from."""

    def __init__(self, flags, values, source):
        self.flags, self.values, self.source = flags, values, source

    def allowed(self, flag, fallback):
        return self.values.get(flag, fallback)


def parse_help(text, source):
    flat = " ".join(text.split())
    values = {m.group(1): {value.strip() for value in m.group(3).split(",")}
              for m in _VALUES.finditer(flat)}
    return DriverFlags(set(_LONG_FLAG.findall(text)), values, source)


def driver_flags(help_file, findings):
    """strata-csi's DriverFlags. A binary or help file that was given and fails is an error."""
    if help_file:
        with open(help_file, encoding="utf-8") as handle:
            parsed = parse_help(handle.read(), f"help text {help_file}")
        findings.check(parsed.flags, help_file, "no --flags found in the help text")
        return parsed
    binary = os.environ.get("STRATA_CSI_BINARY")
    if binary:
        try:
            run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
            text = run.stdout + run.stderr
        except OSError as error:
            findings.fail("STRATA_CSI_BINARY", f"cannot run {binary}: {error}")
            return DriverFlags(set(), {}, f"{binary} (failed)")
        parsed = parse_help(text, f"`{binary} --help`")
        findings.check(run.returncode == 0 and parsed.flags, "STRATA_CSI_BINARY",
                       f"`{binary} --help` exited {run.returncode} with no flags")
        return parsed
    return DriverFlags(set(facts.STRATA_CSI_FLAGS_FALLBACK), {},
                       "fallback list in deploycheck/facts.py")
