"""The invoke tasks end to end: up (detached), status, shell, lease changes, down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mapelab.testbed import api
from tests.testbed.testbed_fixture import REPO, leftovers, require_testbed, runs_root  # noqa: F401


def inv(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], input=stdin, capture_output=True, text=True,
                          cwd=str(REPO), env=os.environ.copy(), timeout=60)


def test_tasks_drive_a_detached_testbed(runs_root: Path) -> None:  # noqa: F811
    require_testbed()
    up = inv("testbed.up", "--scenario", "rfc7597-example1", "--no-br")
    assert up.returncode == 0, up.stderr
    m = re.search(r"testbed (\S+) up in ([\d.]+) s", up.stdout)
    assert m, up.stdout
    run_id = m.group(1)
    assert float(m.group(2)) < 5.0
    tb = api.Testbed(runs_root / run_id)
    prefix = tb.record.prefix
    try:
        sh = inv("testbed.shell", "isp", "--run", run_id, stdin="ip -br link\n")
        assert f"{prefix}wbr" in sh.stdout, sh.stderr
        assert "2001:db8:12:3500::/56" in inv("testbed.renumber", "--run", run_id).stdout
        assert "withdrawn" in inv("testbed.withdraw", "--run", run_id).stdout
        assert "restored" in inv("testbed.withdraw", "--restore", "--run", run_id).stdout
        assert "2001:db8:ffff::2" in inv("testbed.change-br", "--run", run_id).stdout
        bad = inv("testbed.shell", "nowhere", "--run", run_id)
        assert bad.returncode != 0 and "nodes: isp, inet" in bad.stderr
    finally:
        down = inv("testbed.down", "--run", run_id)
    assert "is down" in down.stdout, down.stderr
    assert leftovers(prefix) == []
    assert inv("testbed.up", "--scenario", "nope").returncode != 0
