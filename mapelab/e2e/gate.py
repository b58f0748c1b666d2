"""The deployment gate: which claims a run must prove before a MAP-E CE is trusted, and whether it did.

The claims are data (``data/gate.toml``); the e2e tests that prove them carry
``@pytest.mark.claim("<id>")``.  A run's summary gets a ``gate`` section from :func:`evaluate`:
each claim passed, failed, unsupported or not run — and the gate is passed only when every claim
passed.  An unsupported or missing claim is never read as a pass: that is the difference between
"the suite passed" and "this router may be trusted".
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "gate.toml"


@dataclass(frozen=True)
class Claim:
    id: str
    title: str


def claims(path: Path = DATA) -> list[Claim]:
    data = tomllib.loads(path.read_text())
    out = [Claim(str(c["id"]), str(c["title"])) for c in data.get("claim", [])]
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{path}: claim ids repeat: {', '.join(dup)}")
    return out


def evaluate(results: Iterable[tuple[str, str, str]], path: Path = DATA) -> dict[str, Any]:
    """``results``: (claim id, test outcome, reason) for every test that carries a claim.

    Returns ``{"verdict": passed|open|failed, "claims": {id: {title, verdict, tests, reasons}}}``.
    """
    by_claim: dict[str, list[tuple[str, str]]] = {}
    for cid, outcome, reason in results:
        by_claim.setdefault(cid, []).append((outcome, reason))
    out: dict[str, Any] = {}
    for c in claims(path):
        got = by_claim.get(c.id, [])
        outcomes = [o for o, _ in got]
        if any(o in ("failed", "error") for o in outcomes):
            verdict = "failed"
        elif "passed" in outcomes:
            verdict = "passed"
        elif "unsupported" in outcomes:
            verdict = "unsupported"
        else:
            verdict = "not run"
        out[c.id] = {"title": c.title, "verdict": verdict, "tests": len(got),
                     "reasons": sorted({r for o, r in got if o != "passed" and r})}
    verdicts = {v["verdict"] for v in out.values()}
    gate = "failed" if "failed" in verdicts else ("passed" if verdicts == {"passed"} else "open")
    return {"verdict": gate, "claims": out}
