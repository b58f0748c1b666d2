"""`invoke test`: the whole suite (lint, then pytest) — what CI runs."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task

TOP = Path(__file__).resolve().parents[2]


@task(
    help={
        "k": "pytest -k expression",
        "m": "pytest -m marker expression (unit, testbed, e2e, vm, openbsd)",
        "lint": "run ruff first (default on)",
        "args": "extra pytest arguments, as one string",
    }
)
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
