"""Killing the harness mid-boot leaves no QEMU, and the next run finds the stale locks and cleans them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mapelab.qemu import images, machine, proc
from mapelab.qemu.locks import Lock, pid_alive
from mapelab.qemu.prune import prune

TOP = Path(__file__).resolve().parents[2]


def _qemus_named(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and any(f"mapelab-{name}" in a for a in proc.cmdline(int(d.name))):
            out.append(int(d.name))
    return out


def test_killed_harness_leaves_no_qemu_and_next_run_cleans(linux_image: images.Image, notices: list[str]) -> None:
    name = machine.unique_name("killme")
    script = ("from mapelab.guests import linux\n"
              f"with linux.boot(name={name!r}, accel='tcg'):\n"
              "    pass\n")
    harness = subprocess.Popen([sys.executable, "-c", script], cwd=TOP, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    run_dir = machine.runs_dir() / name
    record = run_dir / "machine.json"
    deadline = time.monotonic() + 60
    qemu_pid = None
    try:
        while time.monotonic() < deadline:  # mid-boot: QEMU runs and the kernel has started printing
            rec = json.loads(record.read_text()) if record.exists() else {}
            log = run_dir / "console-1.log"
            if rec.get("pid") and log.exists() and log.stat().st_size > 2000:
                qemu_pid = int(rec["pid"])
                break
            time.sleep(0.2)
        assert qemu_pid is not None, "the harness never got QEMU booting"
        assert b"MAPELAB-HOSTKEY" not in (run_dir / "console-1.log").read_bytes(), "not mid-boot any more"
    finally:
        harness.kill()  # SIGKILL: no finalizer runs in the harness
        harness.wait()
    gone_by = time.monotonic() + 5
    while time.monotonic() < gone_by and (pid_alive(qemu_pid, None) or _qemus_named(name)):
        time.sleep(0.1)
    assert not pid_alive(qemu_pid, None) and not _qemus_named(name), "QEMU outlived the killed harness"

    # the next run: the locks the dead harness held are found stale, cleaned, and said so
    lk = Lock(f"machine-{name}").acquire()
    lk.release()
    with images.using(linux_image, "next run"):
        pass
    said = [n for n in notices if "stale lock" in n]
    assert any(f"'machine-{name}'" in n and "cleaned" in n for n in said), notices
    assert any(f"'image-{linux_image.key}'" in n and name in n for n in said), notices
    # and pruning removes the killed run's overlay, so the image has no overlay left from it
    acts = prune(runs=[name])
    assert any(f"removed run {name}" in a for a in acts), acts
    assert not any(str(run_dir) in str(o) for o in linux_image.overlays())
