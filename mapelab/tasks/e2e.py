"""`invoke test-e2e`: the product's verdict — does this CE do MAP-E correctly?"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from ._guard import BadInput, Choice, Name, ScenarioFile, guarded

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
        "profile": "OpenBSD CE profile (vm/openbsd/profiles): static (pf patch alone) or dhcp6leased "
                   "(the patched daemon and its orchestrator); default static",
        "image": "OpenBSD CE: the build image to run (a key from invoke vm.list; default: the newest build)",
        "release": "OpenBSD CE: the newest build of this release (e.g. 7.9)",
        "allow_unverified": "OpenBSD CE: install a profile's orchestrator files that have no sha256 pin",
    },
)
@guarded(ce=Choice(BACKENDS, default="auto"), scenario=ScenarioFile(),
         profile=Name(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a profile name (vm/openbsd/profiles/NAME.toml)"),
         image=Name(r"[a-z0-9][a-z0-9-]{0,40}-[0-9a-f]{16}", "an image key like openbsd79-build-0123456789abcdef"),
         release=Name(r"\d\.\d|snapshots", "a release like 7.9, or snapshots"))
def test_e2e(c, ce=None, scenario=None, k=None, args="", profile=None, image=None, release=None,
             allow_unverified=False):
    """Run the end-to-end MAP-E suite against a CE through the simulated ISP; leaves runs/e2e-<time>/summary.*"""
    from mapelab import scenario as scenario_mod
    from mapelab.ce import driver as ce_driver
    from mapelab.e2e.select import DEFAULT_SCENARIOS, choose_backend, describe_backend

    for name in scenario or DEFAULT_SCENARIOS:
        scenario_mod.load(name)  # every scenario checked before pytest starts: ScenarioError → one line, exit 2
    backend = choose_backend(ce)[0]
    openbsd_opts = {"profile": profile, "image": image, "release": release}
    if backend != "openbsd" and (any(openbsd_opts.values()) or allow_unverified):
        given = [f"--{k}" for k, v in openbsd_opts.items() if v] + (["--allow-unverified"] if allow_unverified else [])
        verb = "is" if len(given) == 1 else "are"
        raise BadInput(f"{', '.join(given)} {verb} for the OpenBSD CE; add --ce openbsd (this run's CE is {backend})")
    if backend == "openbsd":
        from mapelab.ce import openbsd_profiles

        openbsd_profiles.load(profile or "static")  # a typo'd profile is one line, before anything starts
        ready = ce_driver.backend("openbsd").image_ready(image=image, release=release)
        if not ready.ready:
            raise BadInput(ready.detail)
    print(f"test-e2e: {describe_backend(ce)}" + (f", profile {profile or 'static'}" if backend == "openbsd" else ""),
          flush=True)
    argv = [sys.executable, "-m", "pytest", "tests/e2e", "--ce", ce]
    if backend == "openbsd":
        argv += ["--ce-profile", profile or "static"]
        argv += ["--ce-image", image] if image else []
        argv += ["--ce-release", release] if release else []
        argv += ["--allow-unverified"] if allow_unverified else []
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
