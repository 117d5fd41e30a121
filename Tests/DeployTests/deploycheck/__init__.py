"""Offline checks of Strata's deploy/ manifests (see validate_manifests.py)."""
