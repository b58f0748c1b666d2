"""`invoke test`: the whole suite (lint, then pytest) — what CI runs."""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke import task

from ._guard import BadInput, Opt, guarded, nearest

TOP = Path(__file__).resolve().parents[2]


def registered_markers() -> list[str]:
    """The markers pyproject.toml registers (``--strict-markers`` makes them the only ones)."""
    data = tomllib.loads((TOP / "pyproject.toml").read_text())
    return [m.split(":")[0].strip() for m in data["tool"]["pytest"]["ini_options"]["markers"]]


@dataclass(frozen=True)
class MarkerExpr(Opt):
    """A pytest -m expression over the registered markers: a misspelt marker would select nothing and
    the run would "pass" having run no test, so it is refused instead."""

    def parse(self, raw: Any) -> str:
        text = str(raw)
        known = registered_markers()
        for token in re.findall(r"[^\s()]+", text):
            if token in ("and", "or", "not") or token in known:
                continue
            raise BadInput(f"{token!r} is not a marker{nearest(token, known)}; markers: {', '.join(known)} "
                           "(combined with and, or, not, parentheses)")
        if text.count("(") != text.count(")"):
            raise BadInput("unbalanced parentheses")
        return text


@task(
    help={
        "k": "pytest -k expression",
        "m": "pytest -m marker expression (unit, testbed, e2e, vm, openbsd)",
        "lint": "run ruff first (default on)",
        "args": "extra pytest arguments, as one string",
    }
)
@guarded(m=MarkerExpr())
def test(c, k=None, m=None, lint=True, args=""):
    """Run the whole test suite: ruff, then every pytest marker (unit, testbed, e2e, vm, openbsd)."""
    venv_bin = Path(sys.executable).parent
    with c.cd(str(TOP)):
        if lint:
            c.run(f"{venv_bin}/ruff check .", echo=True)
        cmd = f"{venv_bin}/python -m pytest"
        if k:
            cmd += f" -k {k!r}"
        if m:
            cmd += f" -m {m!r}"
        c.run(f"{cmd} {args}", echo=True, pty=False)


root_tasks = [test]
