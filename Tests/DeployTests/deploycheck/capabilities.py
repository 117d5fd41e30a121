"""What the driver advertises, as the sidecars see it: read from driver_capabilities.json, the one
list both sides check (Tests/CSIDriverTests/CapabilityFactTests.swift compares it with the
driver's own answers), evaluated for the flags deploy/ starts strata-csi with.
"""

import json
import os

from . import facts

FACT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver_capabilities.json")
SERVICES = ("plugin", "controller", "node", "group_controller")


class Capabilities:
    """The capabilities one strata-csi command line advertises, by service."""

    def __init__(self, profile, mode, controller_expansion, lists):
        self.profile = profile
        self.mode = mode
        self.controller_expansion = controller_expansion
        self.by_service = lists  # service -> set of capability names

    def has(self, service, capability):
        return capability in self.by_service.get(service, set())

    def describe(self):
        return (f"--capability-profile={self.profile} --mode={self.mode} "
                f"--controller-expansion={str(self.controller_expansion).lower()}")


_fact_file = FACT_FILE


def use_fact_file(path):
    """Reads another list instead (validate_manifests.py --capabilities): how DeployTests shows
    that the checks catch a driver advertising what deploy/'s roles do not cover."""
    global _fact_file
    _fact_file = path


def load_facts(path=None):
    with open(path or _fact_file, encoding="utf-8") as handle:
        return json.load(handle)


def advertised(profile, mode, controller_expansion, table=None):
    table = table or load_facts()
    lists = {}
    for service in SERVICES:
        lists[service] = {entry["capability"] for entry in table[service]
                          if _holds(entry.get("when") or {}, profile, mode, controller_expansion)}
    return Capabilities(profile, mode, controller_expansion, lists)


def _holds(when, profile, mode, controller_expansion):
    if "profiles" in when and profile not in when["profiles"]:
        return False
    if "modes" in when and mode not in when["modes"]:
        return False
    if "controller_expansion" in when and controller_expansion != when["controller_expansion"]:
        return False
    return True


def of_driver(driver_args):
    """The capabilities of the driver container's command line (podspec.Arguments)."""
    table = load_facts()
    profile = driver_args.get("capability-profile", "current")
    mode = driver_args.get("mode", facts.STRATA_CSI_DEFAULTS["mode"])
    expansion = driver_args.get("controller-expansion", "true") not in ("false", "0")
    if profile not in table["profiles"] or mode not in table["modes"]:
        return None
    return advertised(profile, mode, expansion, table)
