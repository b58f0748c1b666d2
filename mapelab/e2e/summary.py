"""The summary of an e2e run: what a reviewer (or a tech@ mail) cites as evidence.

``summary.json`` (machine-readable: per CE its derived parameters, per test its verdict),
``summary.txt`` (the same for people) and ``ports-<ce>.png`` (the source ports the IPv4
internet saw, drawn against the CE's port set) land in the run directory next to the pcaps
and logs the testbed already keeps there.  Files are written to a temporary name and renamed,
so an interrupted run never leaves a summary that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapelab.files import atomic_write


@dataclass
class TestVerdict:
    nodeid: str
    outcome: str  # passed, failed, unsupported, skipped, error
    duration: float
    ce: str | None = None
    reason: str = ""
    claims: list[str] = field(default_factory=list)  # deployment-gate claims this test proves


@dataclass
class RunSummary:
    run_dir: Path
    ce_backend: str = ""
    scenarios: list[str] = field(default_factory=list)
    ces: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests: list[TestVerdict] = field(default_factory=list)
    ports_seen: dict[str, list[int]] = field(default_factory=dict)
    port_sets: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    commit: dict[str, Any] = field(default_factory=lambda: mapelab_commit())
    host: str = field(default_factory=lambda: " ".join(os.uname()[::2]))
    notes: list[str] = field(default_factory=list)  # how the run was set up (which CE backend, and why)
    warnings: list[str] = field(default_factory=list)  # evidence that is missing or incomplete (a capture failed)

    def warn(self, text: str) -> None:
        """Record that part of the evidence is missing: the verdict stands on the checks, but the record
        must not suggest it holds what it does not (a pcap that was never written)."""
        self.warnings.append(text)

    def add_ce(self, name: str, params: dict[str, Any], ranges: Sequence[tuple[int, int]]) -> None:
        self.ces[name] = params
        self.port_sets[name] = [tuple(r) for r in ranges]

    def add_ports(self, ce: str, ports: Iterable[int]) -> None:
        self.ports_seen.setdefault(ce, []).extend(ports)

    def add_test(self, verdict: TestVerdict) -> None:
        self.tests.append(verdict)

    # -- output ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tests:
            out[t.outcome] = out.get(t.outcome, 0) + 1
        return out

    def gate(self) -> dict[str, Any]:
        """Each deployment-gate claim: passed, failed, unsupported or not run (mapelab.e2e.gate)."""
        from .gate import evaluate

        return evaluate((c, t.outcome, t.reason) for t in self.tests for c in t.claims)

    def verdict(self) -> str:
        """passed when something ran and nothing failed (an unsupported claim is not a failure of the CE,
        but it is not evidence either: the gate section says what is missing)."""
        c = self.counts()
        return "passed" if c.get("passed") and not (c.get("failed") or c.get("error")) else "failed"

    def tested_on(self) -> str:
        """The line a tech@ mail quotes, e.g. "the openbsd CE on amd64 under QEMU, scenarios …"."""
        return f"the {self.ce_backend} CE against mapelab's simulated MAP-E ISP, scenarios {', '.join(self.scenarios)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "e2e",  # what mapelab.runs checks before following runs/latest-e2e or citing a verdict
            "verdict": self.verdict(),
            "tested_on": self.tested_on(),
            "run_dir": str(self.run_dir),
            "ce_backend": self.ce_backend,
            "scenarios": self.scenarios,
            "started": self.started,
            "mapelab_commit": self.commit,
            "host": self.host,
            "wall_seconds": round(time.time() - self.started, 1),
            "counts": self.counts(),
            "gate": self.gate(),
            "notes": self.notes,
            "warnings": self.warnings,
            "ces": self.ces,
            "ports_outside_set": {
                ce: sorted({p for p in ports if not _inside(p, self.port_sets.get(ce, []))})
                for ce, ports in self.ports_seen.items()
            },
            "tests": [vars(t) for t in self.tests],
        }

    def text(self) -> str:
        d = self.as_dict()
        lines = [f"mapelab e2e run — {d['verdict'].upper()} — CE backend {self.ce_backend or '?'}, "
                 f"{d['wall_seconds']} s",
                 f"run directory: {self.run_dir}",
                 f"mapelab {self.commit.get('commit') or '(not a git checkout)'}"
                 f"{' with uncommitted changes' if self.commit.get('dirty') else ''} on {self.host}"]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines.append("")
        for name, p in self.ces.items():
            lines.append(
                f"{name}: {p.get('ipv4')} PSID {p.get('psid')}/{p.get('psid_len')} offset {p.get('psid_offset')} "
                f"MAP {p.get('map_address')}"
            )
            system = p.get("system") or {}
            if system:
                lines.append(f"  ran on: {', '.join(f'{k} {v}' for k, v in system.items())}")
            seen = self.ports_seen.get(name, [])
            outside = d["ports_outside_set"].get(name, [])
            lines.append(f"  ports seen at the internet: {len(set(seen))} distinct, {len(outside)} outside the set")
        lines.append("")
        for t in self.tests:
            why = f"  {t.reason}" if t.reason else ""
            lines.append(f"{t.outcome.upper():11s} {t.nodeid} ({t.duration:.1f} s){why}")
        lines.append("")
        lines.append(", ".join(f"{n} {k}" for k, n in sorted(d["counts"].items())))
        gate = d["gate"]
        lines += ["", f"deployment gate: {gate['verdict'].upper()}"]
        for cid, c in gate["claims"].items():
            why = f" — {'; '.join(c['reasons'])[:200]}" if c["reasons"] else ""
            lines.append(f"  {c['verdict']:11s} {cid}: {c['title']}{why}")
        return "\n".join(lines) + "\n"

    def write(self) -> list[Path]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        written = [self.run_dir / "summary.json", self.run_dir / "summary.txt"]
        atomic_write(written[0], json.dumps(self.as_dict(), indent=2, default=str))
        atomic_write(written[1], self.text())
        for ce, ports in self.ports_seen.items():
            if ports:
                png = self.run_dir / f"ports-{re.sub(r'[^A-Za-z0-9_.-]+', '-', ce)}.png"
                plot_ports(png, ce, ports, self.port_sets.get(ce, []))
                written.append(png)
        return written


def mapelab_commit() -> dict[str, Any]:
    """The commit of the mapelab checkout that ran (and whether it had uncommitted changes)."""
    top = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": head or None, "dirty": bool(dirty) if head else None}


def _inside(port: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def plot_ports(path: Path, title: str, ports: Sequence[int], ranges: Sequence[tuple[int, int]]) -> None:
    """Ports used (ticks, red when outside) against the port set (shaded), whole space and a zoom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = sorted(set(ports))
    inside = [p for p in used if _inside(p, ranges)]
    outside = [p for p in used if not _inside(p, ranges)]
    fig, axes = plt.subplots(2, 1, figsize=(11, 4.2), gridspec_kw={"height_ratios": [1, 1]})
    zoom_hi = ranges[min(2, len(ranges) - 1)][1] + 64 if ranges else 65535
    zoom_lo = max(0, (ranges[0][0] - 64) if ranges else 0)
    for ax, (lo, hi), label in ((axes[0], (0, 65535), "all ports"), (axes[1], (zoom_lo, zoom_hi), "first ranges")):
        # a range is drawn at least 1/600 of the axis wide, or one-port ranges (m = 0) vanish
        least = (hi - lo) / 600
        spans = [(a - max(0.0, least - (b - a + 1)) / 2, max(b - a + 1, least)) for a, b in ranges]
        ax.broken_barh(spans, (0, 1), facecolors="#9ecae1", label="port set")
        ax.vlines(inside, 0.15, 0.85, colors="#08519c", linewidth=0.6, label=f"used, inside ({len(inside)})")
        if outside:
            ax.vlines(outside, 0, 1, colors="#de2d26", linewidth=1.2, label=f"used, OUTSIDE ({len(outside)})")
        ax.set_xlim(lo, hi)
        ax.set_yticks([])
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=8, ncols=3)
    axes[1].set_xlabel("source port seen by the IPv4 internet")
    fig.suptitle(f"{title}: {len(used)} distinct source ports, {len(outside)} outside the port set", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
