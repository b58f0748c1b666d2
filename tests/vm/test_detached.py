"""A detached guest outlives the harness block, keeps its lock through QEMU, and vm.stop ends it."""

from __future__ import annotations

import contextlib

from mapelab.guests import linux
from mapelab.qemu import images, machine
from mapelab.qemu.locks import Lock, pid_alive
from mapelab.qemu.prune import prune


def test_detached_guest_is_stopped_by_record(linux_image: images.Image) -> None:
    name = machine.unique_name("detached")
    try:
        with linux.boot(name=name, accel="tcg", detach=True) as g:
            pid, start = g.machine.pid, g.machine.pid_start
            port = g.machine.forwarded_ssh
        assert pid and pid_alive(pid, start), "a detached guest must keep running"
        rec = next(r for r in machine.machine_records() if r["name"] == name)
        assert rec["alive"] and rec["ssh_port"] == port and rec["detached"]
        lk = Lock(f"machine-{name}")
        assert not lk.is_free()  # QEMU holds the inherited lock now
        assert all("owner" not in h.pids for h in lk.holders())
        assert "stopped (QMP quit)" in machine.stop_recorded(name)
        assert not pid_alive(pid, start) and lk.is_free()
        assert "not running" in machine.stop_recorded(name)
    finally:
        with contextlib.suppress(Exception):
            machine.stop_recorded(name)
        prune(runs=[name])
