"""Lock logic: exclusion, shared readers, holders that died, locks kept alive by QEMU."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from mapelab.qemu import cache
from mapelab.qemu.errors import LockBusy
from mapelab.qemu.locks import Lock, pid_alive, proc_start_time


@pytest.fixture
def notices() -> list[str]:
    got: list[str] = []
    cache.set_notifier(got.append)
    yield got
    cache.set_notifier(None)


def test_exclusive_lock_excludes_and_names_the_holder(tmp_path: Path) -> None:
    with Lock("image-a", purpose="building a", root=tmp_path):
        with pytest.raises(LockBusy, match=r"building a .*PID \d+.*vm\.stop"):
            Lock("image-a", root=tmp_path).acquire()
        with pytest.raises(LockBusy):
            Lock("image-a", shared=True, root=tmp_path).acquire()
    Lock("image-a", root=tmp_path).acquire().release()  # free again


def test_shared_locks_coexist_but_exclude_writers(tmp_path: Path) -> None:
    a = Lock("image-b", shared=True, purpose="vm1", root=tmp_path).acquire()
    b = Lock("image-b", shared=True, purpose="vm2", root=tmp_path).acquire()
    assert len(a.holders()) == 2
    with pytest.raises(LockBusy, match=r"vm1|vm2"):
        Lock("image-b", root=tmp_path).acquire()
    a.release()
    b.release()
    assert Lock("image-b", root=tmp_path).is_free()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_holder_is_detected_cleaned_and_said(tmp_path: Path, notices: list[str]) -> None:
    lk = Lock("machine-x", root=tmp_path)
    lk.holders_dir.mkdir(parents=True)
    dead = _dead_pid()
    cache.write_json(lk.holders_dir / f"{dead}-1.json",
                     {"pids": {"owner": [dead, 1], "qemu": [dead, 2]}, "purpose": "machine x", "since": time.time()})
    lk.acquire()
    assert any("stale lock on 'machine-x'" in m and f"PID {dead}" in m and "cleaned" in m for m in notices), notices
    assert lk.cleaned and [h.record for h in lk.holders()] == [lk.record]
    lk.release()


def test_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    import os

    me = os.getpid()
    assert pid_alive(me, proc_start_time(me))
    assert not pid_alive(me, (proc_start_time(me) or 0) + 12345)  # same PID, other start time
    assert not pid_alive(_dead_pid(), None)


def test_inherited_lock_outlives_the_harness(tmp_path: Path, notices: list[str]) -> None:
    """QEMU inherits the lock file: the lock stays held while it runs, and frees when it dies."""
    lk = Lock("machine-y", root=tmp_path).acquire()
    assert lk.fd is not None
    child = subprocess.Popen(["sleep", "30"], pass_fds=[lk.fd])
    try:
        lk.add_pid("qemu", child.pid)
        lk.detach_owner()  # the harness lets go, as for a detached machine
        assert not Lock("machine-y", root=tmp_path).is_free()
        rec = json.loads(next(lk.holders_dir.glob("*.json")).read_text())
        assert "owner" not in rec["pids"] and rec["pids"]["qemu"][0] == child.pid
        with pytest.raises(LockBusy, match=f"qemu PID {child.pid}"):
            Lock("machine-y", root=tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    again = Lock("machine-y", root=tmp_path).acquire()
    assert again.cleaned and notices  # the dead QEMU's record was found, cleaned, and said
    again.release()


def test_lock_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock name"):
        Lock("../x", root=tmp_path)
