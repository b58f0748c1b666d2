"""CI's run of the e2e suite against the ``linux-vm`` CE: the reference CE inside the CI Linux guest,
on the guest kernel's ip6tnl, attached to the testbed by TAPs.

Why a subprocess pytest run and not the e2e fixtures directly: the e2e suite picks its backend
per session (``--ce``), and the outer ``pytest tests`` session already runs it with the default
backend; a child session with ``--ce linux-vm`` runs exactly what ``./inv test-e2e --ce linux-vm``
runs, with its own run record under ``runs/``.  Only the core checks run here (provisioning,
connectivity, port-set compliance, lease change on cosmote-like) to keep CI within its budget:
about four minutes of the 2-core machine's time (two guests booted in parallel for the shared
site, one for the lease-change site).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
CORE = "provisioning or reach or port_set or renumbered"
#: one test name fragment per acceptance claim; each must have passed in the child run
MUST_PASS = ("provisioning_equals_the_model", "reach_the_internet", "every_source_port_is_in_the_port_set",
             "renumbered_prefix_moves_everything")


@pytest.fixture(scope="session")  # session: set up before linux_image, so "needs root" is the reason given
def e2e_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.skip("the linux-vm e2e run needs root (testbed namespaces, TAPs, QEMU on them)")
    from mapelab.testbed import api

    missing = api.preflight()
    if missing:
        pytest.skip("missing for the testbed: " + "; ".join(missing))


@pytest.mark.timeout(1800)
def test_e2e_core_checks_pass_with_linux_vm_ce(e2e_prerequisites: None, linux_image: object, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    log = tmp_path / "e2e-linux-vm.log"
    argv = [sys.executable, "-m", "pytest", "tests/e2e", "--ce", "linux-vm", "--scenario", "cosmote-like",
            "-k", CORE, "-p", "no:cacheprovider", f"--junitxml={junit}", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAPELAB_CE", "MAPELAB_SCENARIOS", "PYTEST_ADDOPTS")}
    # Its own runs root: the child's testbed sweep then sees only its own runs, and its run record
    # (summary, pcaps, each CE's console transcript and daemon log) stays with this test's tmp_path.
    env["MAPELAB_RUNS"] = str(tmp_path / "runs")
    t0 = time.monotonic()
    with log.open("w") as out:
        p = subprocess.run(argv, cwd=TOP, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1700, check=False)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    print(f"linux-vm e2e core checks: exit {p.returncode} in {wall:.0f} s; log {log}; run record {tmp_path}/runs")
    assert p.returncode == 0, (f"the e2e suite failed with --ce linux-vm (exit {p.returncode}, {wall:.0f} s; run "
                               f"record under {tmp_path}/runs):\n" + "\n".join(text.splitlines()[-60:]))
    passed = [tc.get("name", "") for tc in ET.parse(junit).getroot().iter("testcase")
              if not any(child.tag in ("failure", "error", "skipped") for child in tc)]
    missing = [m for m in MUST_PASS if not any(m in name for name in passed)]
    assert not missing, f"these core checks did not pass (skipped or not collected): {missing}; passed: {passed}"
