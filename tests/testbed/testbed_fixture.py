"""Shared helpers for the testbed's own tests (not the BR's: see br_fixture.py).

Every test runs against real namespaces, Kea and (where present) the BR, so each skips with
the reason when this machine cannot do that.  Runs go to a per-session directory (env
MAPELAB_RUNS) so the sweep in these tests only ever sees the runs these tests made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapelab.testbed import api

REPO = Path(__file__).resolve().parents[2]


def require_testbed(*binaries: str) -> None:
    """Skip (with the reason) unless this machine can run a testbed and has ``binaries``."""
    if os.geteuid() != 0:
        pytest.skip("testbed tests need root (network namespaces)")
    missing = api.preflight()
    if missing:
        pytest.skip("testbed needs: " + "; ".join(missing))
    for b in binaries:
        if not (Path(b).exists() if b.startswith("/") else shutil.which(b)):
            pytest.skip(f"{b} is not installed")


def br_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mapelab.testbed.br") is not None


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("runs")
    old = os.environ.get("MAPELAB_RUNS")
    os.environ["MAPELAB_RUNS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MAPELAB_RUNS", None)
    else:
        os.environ["MAPELAB_RUNS"] = old


@pytest.fixture
def make_testbed(runs_root: Path) -> Iterator[Any]:
    """``make_testbed("cosmote-like", br=False)`` → a Testbed that is always torn down afterwards."""
    made: list[api.Testbed] = []

    def make(scenario: str = "cosmote-like", **kw: Any) -> api.Testbed:
        require_testbed()
        tb = api.up(scenario, log=lambda line: None, **kw)
        made.append(tb)
        return tb

    yield make
    for tb in made:
        tb.down()


def probe(tb: api.Testbed, slot: int = 1, *args: str) -> dict[str, Any]:
    """Run the DHCPv6 probe client in CE slot ``slot``'s namespace; its JSON answer."""
    s = next(x for x in tb.status.slots if x.index == slot)
    assert s.ce_netns, "probe needs a namespace CE slot"
    p = subprocess.run(
        ["ip", "netns", "exec", s.ce_netns, sys.executable, "-m", "mapelab.testbed.dhcp6client", "--iface",
         s.wan_if, *args], capture_output=True, text=True, timeout=30, cwd=str(REPO),
    )
    out = json.loads(p.stdout)
    assert "error" not in out, f"probe failed: {out} {p.stderr}"
    return out


def in_ns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def leftovers(prefix: str) -> list[str]:
    """Namespaces and root links whose name starts with ``prefix`` (should be none after a run)."""
    ns_dir = Path("/run/netns")
    out = [f"netns {n}" for n in os.listdir(ns_dir) if n.startswith(prefix)] if ns_dir.exists() else []
    out += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(prefix)]
    return out
