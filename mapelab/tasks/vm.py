"""`invoke vm.*`: QEMU machines and images — probe, build, boot, list, console, ssh, stop, prune."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from invoke import Collection, task
from invoke.exceptions import Exit

from ._guard import BadInput, Choice, Int, Name, guarded

ACCEL = Choice(("kvm", "tcg"))
MACHINE = Name(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a machine name (letters, digits, _ . -); see invoke vm.list")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _fail(task_name: str, msg: str, code: int = 1) -> Exit:
    return Exit(f"vm.{task_name}: {msg}", code=code)


def _guard(task_name: str, fn: Callable[[], Any]) -> Any:
    """Run library code so that SIGTERM (a CI timeout, kill) stops machines in order, like Ctrl-C.

    The QEMU layer reports an impossible machine spec as ValueError: that is the user's input
    (exit 2).  Every other error is sorted by :func:`mapelab.tasks._guard.guarded`.
    """

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        return fn()
    except ValueError as e:
        raise BadInput(str(e)) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _need_name(task_name: str, name: str | None) -> str:
    if not name:
        raise _fail(task_name, "give the machine name: --name NAME (invoke vm.list shows them)", code=2)
    return name


def _record(task_name: str, name: str) -> dict[str, Any]:
    from mapelab.qemu.machine import machine_records

    for rec in machine_records():
        if rec.get("name") == name:
            return rec
    raise _fail(task_name, f"--name {name!r}: no such machine; invoke vm.list shows the names", code=2)


@task(help={"accel": "force kvm or tcg instead of probing", "fresh": "ignore the cached verdict and probe again"})
@guarded(accel=ACCEL)
def probe(c, accel=None, fresh=False):
    """Say which accelerator machines will use (probing KVM with a tiny guest) and why."""
    from mapelab.guests import linux
    from mapelab.qemu import accel as accel_mod
    from mapelab.qemu import images

    kernel = None
    with contextlib.suppress(Exception):  # the guest kernel makes a stronger probe, when it is built
        img = images.find(linux.image_key())
        kernel = img.file("vmlinuz") if img else None
    t0 = time.monotonic()
    a = _guard("probe", lambda: accel_mod.choose(accel, fresh=fresh, kernel=kernel))
    took = time.monotonic() - t0
    how = (f"cached verdict from {time.strftime('%H:%M:%S', time.localtime(a.probed_at))}, --fresh probes again"
           if not a.forced and time.time() - a.probed_at > took + 1 else f"decided in {took:.1f}s")
    print(f"accelerator: {a.name} (timeouts x{a.factor:g}) — {a.reason} ({how})")


@task(name="build-linux", help={"rebuild": "build again even if the image for this recipe is cached"})
@guarded()
def build_linux(c, rebuild=False):
    """Build the CI Linux guest image from Debian packages (vm/linux-ci); cached by recipe."""
    from mapelab.guests import linux

    t0 = time.monotonic()
    img = _guard("build-linux", lambda: linux.build(force=rebuild, progress=_say))
    print(f"image {img.key}: {img.size_bytes() / 2**20:.0f} MiB in {img.dir} ({time.monotonic() - t0:.1f}s)")


@task(
    name="boot-linux",
    help={
        "name": "machine name (default: linux-<pid>-<random>)",
        "tap": "existing TAP devices to attach, comma-separated, in order (e.g. the testbed's wan,lan TAPs)",
        "accel": "force kvm or tcg instead of probing",
        "detach": "leave the guest running after this task ends (stop it with invoke vm.stop --name NAME)",
        "cpus": "virtual CPUs, 1..64 (default 2)",
        "memory": "memory in MiB, 64..1048576 (default 1024)",
    },
)
@guarded(name=MACHINE, accel=ACCEL, cpus=Int(1, 64, default=2), memory=Int(64, 1 << 20, default=1024))
def boot_linux(c, name=None, tap=None, accel=None, detach=False, cpus=None, memory=None):
    """Boot the CI Linux guest on a fresh overlay and wait until it answers SSH."""
    taps = [t for t in (tap or "").split(",") if t]
    for t in taps:
        if "/" in t or t in (".", "..") or not os.path.exists(f"/sys/class/net/{t}"):
            raise BadInput(f"--tap {t!r}: no such network device here; create the TAP first "
                           f"(ip tuntap add {t} mode tap) or start the testbed")
    from mapelab.guests import linux

    def run() -> None:
        with linux.boot(name=name, taps=taps, accel=accel, cpus=cpus, memory_mb=memory,
                        progress=_say, detach=detach) as g:
            port = g.machine.forwarded_ssh
            print(f"{g.name}: SSH on 127.0.0.1:{port} (invoke vm.ssh --name {g.name}), console: invoke vm.console "
                  f"--name {g.name}; boot-to-SSH {g.timings['ssh_ready']:.1f}s")
            if detach:
                return
            print("Ctrl-C stops it.")
            while g.machine.running():
                time.sleep(1)

    _guard("boot-linux", run)


@task(name="list", help={"json": "print one JSON object instead of tables"})
@guarded()
def list_(c, json=False):
    """List cached images (key, size, overlays) and machines (state, PID, SSH port)."""
    from mapelab.qemu import cache, images
    from mapelab.qemu.machine import machine_records

    imgs = images.list_images()
    machines = machine_records()
    if json:
        import json as json_mod

        print(json_mod.dumps({
            "cache": str(cache.cache_dir()),
            "images": [{"key": i.key, "sealed": i.sealed, "bytes": i.size_bytes(), "parent": i.parent,
                        "overlays": [str(o) for o in i.overlays()], "dir": str(i.dir)} for i in imgs],
            "machines": machines,
        }, indent=2, default=str))
        return
    print(f"cache: {cache.cache_dir()}")
    print("images:" if imgs else "images: none (invoke vm.build-linux)")
    for i in imgs:
        m = i.meta
        age = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("created", 0)))
        state = "sealed" if i.sealed else "UNSEALED"
        print(f"  {i.key:28} {state:8} {i.size_bytes() / 2**20:7.0f} MiB  built {age} in {m.get('build_seconds', '?')}s"
              f"  overlays {len(i.overlays())}")
    print("machines:" if machines else "machines: none")
    for r in machines:
        state = "running" if r["alive"] else f"stopped ({r.get('exit_reason') or 'unknown'})"
        port = f" ssh 127.0.0.1:{r['ssh_port']}" if r.get("ssh_port") and r["alive"] else ""
        print(f"  {r['name']:28} {state}  pid {r.get('pid')}  {r.get('accel')}{port}  {r['run_dir']}")


@task(help={"name": "the machine (see invoke vm.list)"})
@guarded(name=MACHINE)
def console(c, name=None):
    """Attach this terminal to a running machine's serial console (Ctrl-] detaches)."""
    name = _need_name("console", name)
    rec = _record("console", name)
    if not rec["alive"]:
        raise _fail("console", f"machine {name} is not running; boot it first (invoke vm.boot-linux)", code=2)
    from pathlib import Path

    from mapelab.qemu.console import SerialConsole

    def run() -> None:
        print(f"connected to {name}'s serial console; Ctrl-] detaches", file=sys.stderr)
        with SerialConsole(Path(rec["serial"])) as con:
            con.interact()

    _guard("console", run)


@task(help={"name": "the machine (see invoke vm.list)", "command": "run this command instead of an interactive shell"})
@guarded(name=MACHINE)
def ssh(c, name=None, command=None):
    """Run a command (streamed, exit status passed on) or a shell on a running machine over SSH."""
    name = _need_name("ssh", name)
    rec = _record("ssh", name)
    if not rec["alive"] or not rec.get("ssh_port"):
        raise _fail("ssh", f"machine {name} is not running or has no SSH port yet; see invoke vm.list", code=2)
    from pathlib import Path

    from mapelab.qemu.ssh import HostKeyPin, Ssh, cache_key

    pin = HostKeyPin(Path(rec["run_dir"]) / "host_key.pub")
    port = int(rec["ssh_port"])
    if command:
        def run() -> int:
            with Ssh("127.0.0.1", port, pin=pin, trust_first=False) as s:
                r = s.run(command, on_stdout=lambda t: print(t, end="", flush=True),
                          on_stderr=lambda t: print(t, end="", file=sys.stderr, flush=True))
                return r.status

        status = _guard("ssh", run)
        if status:
            raise Exit(code=status)
        return
    if shutil.which("ssh") is None:
        raise _fail("ssh", "no ssh client for an interactive shell: apt-get install openssh-client, or use --command",
                    code=2)
    pinned = pin.get()
    if pinned is None:
        raise _fail("ssh", f"no pinned host key in {pin.path}; the guest did not finish its first boot")
    known = Path(rec["run_dir"]) / "known_hosts"
    from mapelab.qemu import cache

    cache.atomic_write(known, f"[127.0.0.1]:{port} {pinned}\n", mode=0o600)
    os.execvp("ssh", ["ssh", "-i", str(cache_key()), "-p", str(port), "-o", f"UserKnownHostsFile={known}",
                      "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1"])


@task(help={"name": "the machine (see invoke vm.list)", "all": "stop every running machine"})
@guarded(name=MACHINE)
def stop(c, name=None, all=False):
    """Stop a machine: QMP quit, then SIGTERM, then SIGKILL, by its recorded PID."""
    from mapelab.qemu.machine import machine_records, stop_recorded

    if all:
        names = [r["name"] for r in machine_records() if r["alive"]]
        if not names:
            print("no running machines")
    else:
        names = [_need_name("stop", name)]
        _record("stop", names[0])
    for n in names:
        print(_guard("stop", lambda n=n: stop_recorded(n)))


@task(help={"images": "also remove image layers no machine uses (the current Linux guest stays unless --all)",
            "all": "with --images: remove the current Linux guest image too",
            "dry_run": "only say what would be removed"})
@guarded()
def prune(c, images=False, all=False, dry_run=False):
    """Remove stopped machines' runs, unfinished builds, stale locks and (with --images) unused images."""
    from mapelab.guests import linux
    from mapelab.qemu import prune as prune_mod

    if all and not images:
        raise BadInput("--all only means something with --images (remove the current Linux guest image too)")
    keep: list[str] = []
    if images and not all:
        # The image the current recipe needs is never pruned: if its key cannot be computed we cannot
        # tell which image that is, so no image is removed (an empty keep list would remove them all).
        try:
            keep.append(linux.image_key())
        except Exception as e:
            raise _fail("prune", f"cannot tell which image the current Linux guest needs ({type(e).__name__}: {e}); "
                                 "no image was removed. Fix what the error names (the recipe in vm/linux-ci, the "
                                 "cache's ssh key), or pass --all to remove that image too") from None
    acts = _guard("prune", lambda: prune_mod.prune(images_too=images, keep_keys=keep, dry_run=dry_run))
    for a in acts:
        print(a)
    if not acts:
        print("nothing to prune")


collection = Collection("vm", probe, build_linux, boot_linux, list_, console, ssh, stop, prune)
