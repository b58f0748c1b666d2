"""Run directories, the run record, and the sweep that cleans up after killed runs.

Each run owns ``runs/<id>/`` (``runs/`` at the repository root, or ``$MAPELAB_RUNS``; see
:mod:`mapelab.runs`) and a name prefix.  ``run.json`` — the run record — names the prefix, the owning process (the
testbed supervisor, identified by PID and start time) and every process it started.  The
record is written *before* anything is created, so whatever a killed run left is findable by
its prefix.

The sweep only touches runs whose record says they are not finished and whose owner is gone:
other people's namespaces (other prefixes, or live owners) are never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapelab.files import atomic_write as write_atomic
from mapelab.runs import KINDS, runs_root

from . import topology
from .proc import ProcRef, kill

RECORD = KINDS["testbed"]  # run.json
FINISHED = ("down", "failed", "swept")


def new_run() -> tuple[str, str, Path]:
    """A fresh (run id, prefix, run dir) whose prefix is used by no namespace, link or record."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    taken = {n[:7] for n in topology.nn.list_netns() + topology.nn.root_links() if n.startswith("ml")}
    for _ in range(100):
        hex4 = secrets.token_hex(2)
        prefix = f"ml{hex4}-"
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{hex4}"
        run_dir = root / run_id
        if prefix in taken or run_dir.exists():
            continue
        run_dir.mkdir()
        return run_id, prefix, run_dir
    raise RuntimeError(f"no free run prefix after 100 tries: clean {root} and `ip netns list` of ml* leftovers")


@dataclass
class RunRecord:
    """``run.json``: what the sweep and ``testbed.down`` need to find and remove a run."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        p = run_dir / RECORD
        return cls(p, json.loads(p.read_text()))

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    def update(self, **changes: Any) -> None:
        # Re-read first: the supervisor and a `down` caller may both write the record.
        with contextlib.suppress(OSError, ValueError):
            self.data = json.loads(self.path.read_text())
        self.data.update(changes)
        self.save()

    @property
    def owner(self) -> ProcRef | None:
        o = self.data.get("owner")
        return ProcRef.from_dict(o) if o else None

    @property
    def procs(self) -> list[ProcRef]:
        return [ProcRef.from_dict(p) for p in self.data.get("procs", [])]

    def add_proc(self, ref: ProcRef) -> None:
        procs = [p for p in self.data.get("procs", []) if p["name"] != ref.name or p["pid"] != ref.pid]
        procs.append(ref.to_dict())
        self.update(procs=procs)

    def drop_proc(self, ref: ProcRef) -> None:
        self.update(procs=[p for p in self.data.get("procs", []) if p["pid"] != ref.pid])

    @property
    def state(self) -> str:
        return str(self.data.get("state", "unknown"))

    @property
    def prefix(self) -> str:
        return str(self.data["prefix"])


def sweep(root: Path | None = None, log=print) -> list[str]:
    """Remove what killed runs left: namespaces and links by prefix, processes by recorded PID.

    Only runs with a mapelab run record, not marked finished, whose owner process is gone.
    Returns one line per run cleaned (also passed to ``log``).
    """
    root = root or runs_root()
    said: list[str] = []
    if not root.is_dir():
        return said
    for rec_path in sorted(root.glob(f"*/{RECORD}")):
        if rec_path.parent.is_symlink():  # runs/latest-testbed
            continue
        try:
            rec = RunRecord.load(rec_path.parent)
            prefix = rec.prefix
        except (OSError, ValueError, KeyError):
            continue
        if rec.state in FINISHED:
            continue
        owner = rec.owner
        if owner is not None and owner.alive():
            continue
        killed = [f"{p.name}[{p.pid}]" for p in rec.procs if kill(p, grace=1.0)]
        removed = topology.destroy(prefix)
        rec.update(state="swept", swept_at=time.time(), swept_by=os.getpid())
        line = (
            f"sweep: run {rec_path.parent.name} (prefix {prefix}) was left by a process that is gone "
            f"(pid {owner.pid if owner else '?'}); killed {', '.join(killed) or 'no processes'}; "
            f"removed {', '.join(removed) or 'nothing'}"
        )
        log(line)
        said.append(line)
    return said
