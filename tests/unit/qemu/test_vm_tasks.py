"""`invoke vm.*` as a user runs it: bad input exits 2 with one line naming the input and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(TOP)]


def vm(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAPELAB_CACHE": str(cache)}
    return subprocess.run([*INVOKE, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["vm.stop"], "--name NAME"),
        (["vm.stop", "--name", "no/such"], "not a machine name"),
        (["vm.ssh", "--name", "nosuch"], "no such machine"),
        (["vm.console", "--name", "nosuch"], "no such machine"),
        (["vm.boot-linux", "--accel", "hvf"], "use kvm or tcg"),
        (["vm.boot-linux", "--tap", "mlq-no-such-tap"], "no such network device"),
        (["vm.probe", "--accel", "xen"], "use kvm or tcg"),
    ],
)
def test_bad_input_is_one_line_and_code_2(tmp_path: Path, args: list[str], needle: str) -> None:
    r = vm(*args, cache=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_list_and_prune_on_an_empty_cache(tmp_path: Path) -> None:
    r = vm("vm.list", "--json", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["images"] == [] and d["machines"] == [] and d["cache"] == str(tmp_path)
    r = vm("vm.prune", "--images", "--dry-run", cache=tmp_path)
    assert r.returncode == 0 and "nothing to prune" in r.stdout


def test_every_vm_task_has_help() -> None:
    r = subprocess.run([*INVOKE, "--list", "vm"], capture_output=True, text=True, timeout=60)
    for name in ("probe", "build-linux", "boot-linux", "list", "console", "ssh", "stop", "prune"):
        assert f".{name} " in r.stdout
    for name in ("console", "ssh", "stop", "boot-linux"):
        h = subprocess.run([*INVOKE, "--help", f"vm.{name}"], capture_output=True, text=True, timeout=60)
        assert "--name" in h.stdout and ("vm.list" in h.stdout or "machine name" in h.stdout), h.stdout
