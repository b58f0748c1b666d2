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
        (["vm.boot-linux", "--accel", "hvf"], "use one of kvm, tcg"),
        (["vm.boot-linux", "--tap", "mlq-no-such-tap"], "no such network device"),
        (["vm.probe", "--accel", "xen"], "use one of kvm, tcg"),
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


def test_prune_never_removes_the_image_the_current_recipe_needs(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The keep list is the current recipe's image key; when that key cannot be computed (here: the
    cache's SSH public key, part of the key, is unreadable for real), no image is removed at all."""
    from mapelab.guests import linux
    from mapelab.qemu import cache as qcache

    monkeypatch.setenv("MAPELAB_CACHE", str(tmp_path))
    key = linux.image_key()
    layer = tmp_path / "images" / key
    layer.mkdir(parents=True)
    (layer / "disk.qcow2").write_bytes(b"not really a disk")
    qcache.write_json(layer / "meta.json", {"sealed": True})
    r = vm("vm.prune", "--images", "--dry-run", cache=tmp_path)
    assert r.returncode == 0 and f"kept image {key}: current" in r.stdout, (r.stdout, r.stderr)
    pub = tmp_path / "ssh" / "id_ed25519.pub"
    pub.unlink()
    pub.mkdir()  # the key computation now fails: reading it raises IsADirectoryError
    r = vm("vm.prune", "--images", cache=tmp_path)
    assert r.returncode == 1 and "no image was removed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (layer / "disk.qcow2").exists()
    r = vm("vm.prune", "--all", cache=tmp_path)
    assert r.returncode == 2 and "--all only means something with --images" in r.stderr


def test_every_vm_task_has_help() -> None:
    r = subprocess.run([*INVOKE, "--list", "vm"], capture_output=True, text=True, timeout=60)
    for name in ("probe", "build-linux", "boot-linux", "list", "console", "ssh", "stop", "prune"):
        assert f".{name} " in r.stdout
    for name in ("console", "ssh", "stop", "boot-linux"):
        h = subprocess.run([*INVOKE, "--help", f"vm.{name}"], capture_output=True, text=True, timeout=60)
        assert "--name" in h.stdout and ("vm.list" in h.stdout or "machine name" in h.stdout), h.stdout
