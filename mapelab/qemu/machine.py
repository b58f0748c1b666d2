"""One QEMU process: start, find its SSH port, stop in order, keep how it ended.

A machine lives in ``<cache>/runs/<name>/``: ``machine.json`` (spec, argv, PIDs, sockets, state,
exit status and reason), ``console-N.log`` (the serial transcript of boot N), ``qemu.stderr``,
and usually the per-run overlay disk.  Its lock ``machine-<name>`` is held by the harness and
inherited by QEMU, so it is free exactly when neither is alive; a later run that finds the
record of a dead holder says so and cleans it (see :mod:`mapelab.qemu.locks`).

Stopping goes QMP ``quit`` → SIGTERM → SIGKILL, each by the PID we recorded (and its start
time), never by name.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from . import cache, images, proc
from .accel import QEMU_BINARY, Accel
from .errors import MachineError
from .locks import Lock, pid_alive, proc_start_time
from .qmp import Qmp, parse_usernet_forwards
from .spec import MachineSpec

_SOCK_MAX = 100  # sun_path is 108 bytes; keep a margin


def runs_dir(root: Path | None = None) -> Path:
    return cache.sub("runs", root)


def unique_name(prefix: str = "vm") -> str:
    """A machine name no other run (or other agent on this host) will pick: prefix-pid-random."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


_live: weakref.WeakSet[Machine] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Interpreter exit (an uncaught exception, sys.exit) stops every machine this process started."""
    for m in list(_live):
        with contextlib.suppress(Exception):
            m.stop(reason="harness exiting")


class Machine:
    """A QEMU machine built from a :class:`MachineSpec`.

    Use ``with Machine(spec) as m:`` — leaving the block (normally, by exception or Ctrl-C) stops
    QEMU.  ``detach=True`` keeps QEMU running after this process exits (``invoke vm.stop`` ends it).
    Without ``detach``, QEMU is SIGKILLed by the kernel when the *thread* that started it ends:
    start machines from a thread that lives as long as they should (normally the main thread).
    """

    def __init__(self, spec: MachineSpec, *, accel: Accel | None = None, run_dir: Path | None = None,
                 root: Path | None = None, detach: bool = False, binary: str = QEMU_BINARY) -> None:
        spec.validate()
        self.spec = spec
        self.accel = accel or Accel(spec.accel, "as given in the spec")
        self.root = root
        self.run_dir = (run_dir or runs_dir(root) / spec.name).absolute()
        self.detach = detach
        self.binary = binary
        self.lock = Lock(f"machine-{spec.name}", purpose=f"machine {spec.name}", root=root)
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.boot = 0
        self.exit_status: int | None = None
        self.exit_reason: str | None = None
        self._sock_dir: Path | None = None
        self._qmp: Qmp | None = None
        self._stderr: Any = None
        self.started_at = 0.0
        self.forwarded_ssh: int | None = None
        self.thread = threading.current_thread()

    # -- paths ------------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.run_dir / "machine.json"

    @property
    def transcript(self) -> Path:
        """The serial transcript of the current (or last) boot."""
        return self.run_dir / f"console-{self.boot}.log"

    def _sockets(self) -> tuple[Path, Path]:
        qmp, ser = self.run_dir / "qmp.sock", self.run_dir / "serial.sock"
        if len(str(ser)) > _SOCK_MAX:
            # a deep cache path would overflow sun_path: use a short private directory instead
            self._sock_dir = Path(tempfile.mkdtemp(prefix="mlq-"))
            qmp, ser = self._sock_dir / "qmp.sock", self._sock_dir / "serial.sock"
        return qmp, ser

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Machine:
        """Start QEMU and wait until its QMP socket answers; raise with QEMU's stderr if it dies."""
        if self.popen is not None and self.popen.poll() is None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in self.spec.disks:
            if not d.readonly and not d.snapshot:
                images.check_writable(d.path, self.root)  # never write a sealed layer or one under overlays
        self.lock.acquire()
        try:
            prev = cache.read_json(self.record_path) or {}
            self.boot = int(prev.get("boots", 0)) + 1
            self.qmp_path, self.serial_path = self._sockets()
            for s in (self.qmp_path, self.serial_path):
                with contextlib.suppress(FileNotFoundError):
                    s.unlink()
            argv = self.spec.argv(qmp_socket=self.qmp_path, serial_socket=self.serial_path,
                                  serial_log=self.transcript, binary=self.binary)
            self.argv = argv
            self._stderr = open(self.run_dir / "qemu.stderr", "ab")  # noqa: SIM115 - closed in _cleanup()
            self._stderr.write(f"--- boot {self.boot} {time.ctime()}\n".encode())
            self._stderr.flush()
            assert self.lock.fd is not None
            self.started_at = time.monotonic()
            self.popen = proc.spawn(argv, die_with_parent=not self.detach, stderr=self._stderr,
                                    pass_fds=[self.lock.fd])
            self.pid = self.popen.pid
            self.pid_start = proc_start_time(self.pid)
            self.lock.add_pid("qemu", self.pid)
            self.exit_status = self.exit_reason = None
            self._write_record("starting")
            _live.add(self)
            try:
                self._qmp = Qmp(self.qmp_path).connect(timeout=self.accel.timeout(15))
            except MachineError:
                self._collect_exit("failed to start")
                raise MachineError(
                    f"QEMU for {self.spec.name} did not start: {self.stderr_tail() or 'no message'} "
                    f"(command line in {self.record_path})"
                ) from None
            self._write_record("running")
            return self
        except BaseException:
            self._kill_now()
            self._cleanup()  # closes files, releases the lock, forgets the machine
            raise

    def _kill_now(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
            self._collect_exit("killed during start")

    def ssh_port(self, guest_port: int = 22) -> int:
        """The host port (on 127.0.0.1) forwarded to ``guest_port``, as QEMU reports it."""
        text = self.qmp().hmp("info usernet")
        for haddr, hport, _gaddr, gport in parse_usernet_forwards(text):
            if gport == guest_port and haddr == "127.0.0.1" and hport:
                if guest_port == 22 and self.forwarded_ssh != hport:
                    self.forwarded_ssh = hport
                    self._write_record("running")  # vm.ssh reads it: QMP takes one client at a time
                return hport
        raise MachineError(f"machine {self.spec.name}: no host forward to guest port {guest_port} in "
                           f"'info usernet' ({text.strip()[:200]!r}); does its spec have a UserNic with ssh_port?")

    def qmp(self) -> Qmp:
        if self._qmp is None:
            raise MachineError(f"machine {self.spec.name} is not running (no QMP connection)")
        return self._qmp

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait for QEMU to exit by itself (e.g. ``-no-reboot`` after an install); its status or None."""
        if self.popen is None:
            return self.exit_status
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._collect_exit("exited by itself (guest powered off or rebooted with -no-reboot)")
        return self.exit_status

    def stop(self, *, timeout: float = 10.0, reason: str = "stopped") -> tuple[int | None, str]:
        """QMP quit, then SIGTERM, then SIGKILL by recorded PID; return (exit status, how it ended)."""
        how = None
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp().execute("quit", timeout=2)
            if proc.wait_gone(self.pid or 0, self.pid_start, timeout, self.popen):
                how = f"{reason}: QMP quit"
            else:
                proc.signal_recorded(self.pid or 0, self.pid_start, signal.SIGTERM)
                if proc.wait_gone(self.pid or 0, self.pid_start, 5, self.popen):
                    how = f"{reason}: SIGTERM (QMP quit was ignored)"
                else:
                    proc.signal_recorded(self.pid or 0, self.pid_start, signal.SIGKILL)
                    self.popen.wait(10)
                    how = f"{reason}: SIGKILL (QMP quit and SIGTERM were ignored)"
        if self.popen is not None:
            self._collect_exit(how or self.exit_reason or "exited by itself")
        self._cleanup()
        return self.exit_status, self.exit_reason or "never started"

    def _collect_exit(self, reason: str) -> None:
        if self.popen is None or self.popen.poll() is None:
            return
        if self.exit_reason is None:
            rc = self.popen.returncode
            self.exit_status = rc
            self.exit_reason = reason if rc >= 0 else f"{reason} (signal {-rc})"
            self._write_record("stopped")

    def _cleanup(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._sock_dir is not None:
            import shutil

            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        self.lock.release()
        _live.discard(self)

    def release_detached(self) -> None:
        """Leave QEMU running after this process exits; its inherited lock keeps the machine held."""
        self.lock.detach_owner()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        _live.discard(self)
        self._write_record("running (detached)")

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = (self.run_dir / "qemu.stderr").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(line for line in lines[-n:] if not line.startswith("--- boot"))

    def _write_record(self, state: str) -> None:
        cache.write_json(self.record_path, {
            "name": self.spec.name, "state": state, "boots": self.boot, "accel": self.accel.name,
            "pid": self.pid, "pid_start": self.pid_start, "harness_pid": os.getpid(), "detached": self.detach,
            "qmp": str(getattr(self, "qmp_path", "")), "serial": str(getattr(self, "serial_path", "")),
            "transcript": str(self.transcript), "argv": getattr(self, "argv", []),
            "nics": self.spec.nic_macs(), "ssh_port": self.forwarded_ssh,
            "exit_status": self.exit_status, "exit_reason": self.exit_reason,
            "updated": time.time(),
        })

    def __enter__(self) -> Machine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.detach and exc[0] is None:
            self.release_detached()
        else:
            self.stop(reason="interrupted" if exc[0] is KeyboardInterrupt else "stopped")


# -- machines seen from another process (vm.list, vm.stop) ------------------------------------

def machine_records(root: Path | None = None) -> list[dict[str, Any]]:
    """Every machine record with a ``alive`` flag (its recorded QEMU PID still runs)."""
    out = []
    for d in sorted(runs_dir(root).iterdir()):
        rec = cache.read_json(d / "machine.json")
        if not isinstance(rec, dict):
            continue
        pid = rec.get("pid")
        rec["alive"] = bool(pid) and pid_alive(int(pid), rec.get("pid_start"))
        rec["run_dir"] = str(d)
        out.append(rec)
    return out


def stop_recorded(name: str, root: Path | None = None, timeout: float = 10.0) -> str:
    """Stop a machine started by any mapelab process, by its record: QMP quit, SIGTERM, SIGKILL."""
    d = runs_dir(root) / name
    rec = cache.read_json(d / "machine.json")
    if not isinstance(rec, dict):
        raise MachineError(f"no machine named {name!r}; see invoke vm.list for the names")
    pid, start = rec.get("pid"), rec.get("pid_start")
    if not pid or not pid_alive(int(pid), start):
        Lock(f"machine-{name}", root=root).sweep_stale()
        return f"{name} is not running"
    argv = proc.cmdline(int(pid))
    if not any(f"mapelab-{name}" in a for a in argv):
        raise MachineError(f"PID {pid} recorded for {name} is not its QEMU any more; not touching it")
    how = ""
    with contextlib.suppress(Exception):
        q = Qmp(Path(rec["qmp"])).connect(timeout=3)
        q.execute("quit", timeout=2)
        q.close()
    if proc.wait_gone(int(pid), start, timeout):
        how = "QMP quit"
    else:
        proc.signal_recorded(int(pid), start, signal.SIGTERM)
        if proc.wait_gone(int(pid), start, 5):
            how = "SIGTERM"
        else:
            proc.signal_recorded(int(pid), start, signal.SIGKILL)
            proc.wait_gone(int(pid), start, 10)
            how = "SIGKILL"
    rec.update(state="stopped", exit_reason=f"stopped by vm.stop: {how}", updated=time.time())
    cache.write_json(d / "machine.json", rec)
    Lock(f"machine-{name}", root=root).sweep_stale(quiet=True)  # an orderly stop, not a stale lock
    return f"{name} stopped ({how})"
