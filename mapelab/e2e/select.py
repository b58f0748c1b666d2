"""Which CE the e2e suite runs against: ``auto`` prefers a built OpenBSD CE, else the reference CE.

Shared by ``invoke test-e2e`` (which says which it took before starting) and the suite itself.
"""

from __future__ import annotations

from mapelab.ce import driver as ce_driver


def choose_backend(asked: str) -> tuple[str, str]:
    """(backend, why)."""
    if asked != "auto":
        return asked, "asked for"
    if "openbsd" in ce_driver.available():
        return "openbsd", "auto: an OpenBSD CE backend and image are available"
    return "linux", "auto: no OpenBSD CE image has been built, so the reference Linux CE stands in"


def describe_backend(asked: str) -> str:
    backend, why = choose_backend(asked)
    return f"CE backend {backend} ({why})"
