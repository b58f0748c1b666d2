"""`invoke test-e2e`: the product's verdict — does this CE do MAP-E correctly?"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

TOP = Path(__file__).resolve().parents[2]
BACKENDS = ("auto", "linux", "linux-vm", "openbsd")


@task(
    iterable=["scenario"],
    help={
        "ce": "CE backend: auto (OpenBSD when an image is built, else the reference Linux CE), linux, linux-vm, "
              "openbsd",
        "scenario": "scenario name or TOML file (repeatable; default: cosmote-like, rfc7597-example1, k12-small-set)",
        "k": "pytest -k expression to pick tests",
        "args": "extra pytest arguments, as one string",
    },
)
def test_e2e(c, ce="auto", scenario=None, k=None, args=""):
    """Run the end-to-end MAP-E suite against a CE through the simulated ISP; leaves runs/<id>/summary.*"""
    if ce not in BACKENDS:
        raise Exit(f"test-e2e: --ce {ce!r} is not a backend; use one of {', '.join(BACKENDS)}", code=2)
    from mapelab import scenario as scenario_mod

    for name in scenario or []:
        try:
            scenario_mod.resolve(name)
        except scenario_mod.ScenarioError as e:
            raise Exit(f"test-e2e: {e}", code=2) from None
    from mapelab.e2e.select import describe_backend

    print(f"test-e2e: {describe_backend(ce)}", flush=True)
    argv = [sys.executable, "-m", "pytest", "tests/e2e", "--ce", ce]
    for name in scenario or []:
        argv += ["--scenario", name]
    if k:
        argv += ["-k", k]
    cmd = " ".join(shlex.quote(a) for a in argv) + (f" {args}" if args else "")
    with c.cd(str(TOP)):
        result = c.run(cmd, warn=True, pty=False)
    latest = TOP / "runs" / "latest"
    if latest.exists() and (latest / "summary.txt").exists():
        print(f"\nrun record: {latest.resolve()}  (summary.txt, summary.json, ports-*.png, per-test pcaps)")
    if result.exited:
        raise Exit(code=result.exited)


root_tasks = [test_e2e]
