"""Which CE the e2e suite runs against: ``auto`` prefers a built OpenBSD CE, else the reference CE.

Shared by ``invoke test-e2e`` (which says which it took before starting) and the suite itself.
"""

from __future__ import annotations

from mapelab.ce import driver as ce_driver

#: What ``test-e2e`` runs without ``--scenario``: the real ISP's shape, the RFC's example, and a port
#: set small enough to exhaust.  The task checks these files before pytest starts; the suite loads them.
DEFAULT_SCENARIOS = ("cosmote-like", "rfc7597-example1", "k12-small-set")


def choose_backend(asked: str) -> tuple[str, str]:
    """(backend, why)."""
    if asked != "auto":
        return asked, "asked for"
    if "openbsd" in ce_driver.available():
        ready = ce_driver.backend("openbsd").image_ready()
        if ready.ready:
            return "openbsd", f"auto: an OpenBSD CE image is built ({ready.detail})"
        return "linux", f"auto: {ready.detail}; the reference Linux CE stands in"
    return "linux", "auto: no OpenBSD CE backend in this checkout, so the reference Linux CE stands in"


def describe_backend(asked: str) -> str:
    backend, why = choose_backend(asked)
    return f"CE backend {backend} ({why})"
