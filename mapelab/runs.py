"""Run directories of every kind, and a pointer to each kind's newest run.

Two kinds of run live side by side under ``runs/`` (the repository's, or ``$MAPELAB_RUNS``):
a *testbed* run (``<id>/run.json``: the record ``testbed.*`` tasks and the sweep read) and an
*e2e* run (``e2e-<time>/summary.json``: the verdict, which ``test-e2e`` prints and a tech@ mail
cites).  An e2e run brings up testbed runs of its own, so the newest run of one kind is not the
newest of the other: each kind has its own pointer, ``runs/latest-testbed`` and
``runs/latest-e2e``, and following one checks that it leads to a run of that kind (a testbed
task handed an e2e directory would find no run.json and crash, and a mail must never cite a
testbed run as a verdict).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: kind → the file that makes a directory a run of that kind (and holds its "kind" field).
KINDS = {"testbed": "run.json", "e2e": "summary.json"}


class RunLookupError(LookupError):
    """No run of the kind asked for; the message says where it looked and how to make one."""


def runs_root() -> Path:
    return Path(os.environ.get("MAPELAB_RUNS") or REPO_ROOT / "runs")


def pointer(kind: str, root: Path | None = None) -> Path:
    """``runs/latest-<kind>``."""
    if kind not in KINDS:
        raise ValueError(f"run kind {kind!r}: one of {', '.join(KINDS)}")
    return (root or runs_root()) / f"latest-{kind}"


def run_kind(run_dir: Path) -> str | None:
    """The kind a directory's own record declares (a record without the field is of the kind its
    file name says, as records written before the field existed are), or None when it holds none."""
    for kind, name in KINDS.items():
        path = run_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            declared = data.get("kind", kind) if isinstance(data, dict) else None
            return declared if declared == kind else None
    return None


def set_latest(run_dir: Path, kind: str) -> None:
    """Point ``runs/latest-<kind>`` at ``run_dir`` (a relative symlink, replaced atomically)."""
    link = pointer(kind, run_dir.parent)
    tmp = run_dir.parent / f".latest-{kind}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)
    legacy = run_dir.parent / "latest"  # one pointer for both kinds, which led testbed tasks into e2e runs
    with contextlib.suppress(OSError):
        if legacy.is_symlink():
            legacy.unlink()


def latest(kind: str, root: Path | None = None) -> Path:
    """The directory ``runs/latest-<kind>`` leads to, checked to be a run of that kind."""
    link = pointer(kind, root)
    if not link.is_symlink() and not link.exists():
        how = "invoke testbed.up" if kind == "testbed" else "invoke test-e2e"
        raise RunLookupError(f"no {kind} run yet under {link.parent} ({link.name} is missing): start one with `{how}`")
    target = link.resolve()
    found = run_kind(target) if target.is_dir() else None
    if found != kind:
        raise RunLookupError(f"{link} leads to {target}, which is not a {kind} run"
                             f"{f' (its record says {found})' if found else ''}; it was removed or moved")
    return target
