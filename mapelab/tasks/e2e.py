"""`invoke test-e2e`: the product's verdict — does this CE do MAP-E correctly?"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from ._guard import Choice, ScenarioFile, guarded

TOP = Path(__file__).resolve().parents[2]
BACKENDS = ("auto", "linux", "linux-vm", "openbsd")


def _latest_e2e() -> Path | None:
    from mapelab import runs

    try:
        return runs.latest("e2e")
    except runs.RunLookupError:
        return None


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
@guarded(ce=Choice(BACKENDS, default="auto"), scenario=ScenarioFile())
def test_e2e(c, ce=None, scenario=None, k=None, args=""):
    """Run the end-to-end MAP-E suite against a CE through the simulated ISP; leaves runs/e2e-<time>/summary.*"""
    from mapelab import scenario as scenario_mod
    from mapelab.e2e.select import DEFAULT_SCENARIOS, describe_backend

    for name in scenario or DEFAULT_SCENARIOS:
        scenario_mod.load(name)  # every scenario checked before pytest starts: ScenarioError → one line, exit 2
    print(f"test-e2e: {describe_backend(ce)}", flush=True)
    argv = [sys.executable, "-m", "pytest", "tests/e2e", "--ce", ce]
    for name in scenario or []:
        argv += ["--scenario", name]
    if k:
        argv += ["-k", k]
    cmd = " ".join(shlex.quote(a) for a in argv) + (f" {args}" if args else "")
    before = _latest_e2e()
    with c.cd(str(TOP)):
        result = c.run(cmd, warn=True, pty=False)
    after = _latest_e2e()
    if after is not None and after != before:
        print(f"\nrun record: {after}  (summary.txt, summary.json, ports-*.png, per-test pcaps; "
              f"runs/latest-e2e points at it)")
    else:
        print("\nno run record was written (pytest stopped before the suite ran)")
    if result.exited:
        raise Exit(code=result.exited)


root_tasks = [test_e2e]
