"""Backend ``linux-vm``: the reference CE daemon inside the CI Linux guest, on the guest kernel's ip6tnl.

Why it exists: the namespace backend (``linux``) proves the e2e suite against a CE that shares
the host's kernel, which here has no ip6tnl, so the daemon falls back to its userspace tunnel.
This backend runs the *same* daemon (``python -m mapelab.ce.linux``) in a QEMU guest attached to
a testbed VM slot by its two TAPs, with ``--tunnel ip6tnl``: the kernel datapath a real Linux CE
uses, and the same VM plumbing (boot, console, SSH, TAPs) the OpenBSD CE stands on.

How it maps onto the driver interface:

* ``start()`` boots the guest (building the image on first use; cached after), uploads only the
  part of mapelab the daemon imports (``mape``, ``netio``, ``ce``'s daemon modules and
  ``testbed.inject`` for the spoofing check) and starts the daemon detached from the SSH session.
  Booting blocks (QEMU belongs to the thread that starts it), bounded by ``start_timeout``;
  provisioning then happens in the background like the namespace backend's.
* Observation reads the guest's ``state.json`` over SSH; a state file is trusted only when its
  ``pid`` is the daemon this driver started (as the namespace backend does).
* Signals go by PID: SIGUSR1 renews, SIGTERM releases and withdraws, SIGKILL is the ungraceful restart.
* ``teardown()`` stops the daemon, copies its log, last state and the console transcript into
  ``state_dir``, then stops QEMU through the QMP ladder.  Idempotent.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from mapelab.testbed.status import CeSlot

from .driver import CeError, CeParams, register
from .reference import ReferenceCe

PKG = Path(__file__).resolve().parents[1]  # the mapelab package directory

#: what the daemon (and the spoofing check's ``python3 -m mapelab.testbed.inject``) imports: the
#: daemon may import only the stdlib, ``mapelab.mape``, ``mapelab.netio`` and ``mapelab.ce``.
UPLOAD = (
    "__init__.py",
    "mape",
    "netio",
    "ce/__init__.py", "ce/linux.py", "ce/dhcp6client.py", "ce/nat.py", "ce/system.py",
    "testbed/__init__.py", "testbed/inject.py",
)
GUEST_TOP = "/opt/mapelab"  # PYTHONPATH in the guest
GUEST_STATE = "/var/lib/mapelab-ce"  # the daemon's --state-dir in the guest


def stage_package(dest: Path) -> Path:
    """Copy the daemon's part of mapelab under ``dest/mapelab`` (mtimes kept); return ``dest``."""
    for rel in UPLOAD:
        src = PKG / rel
        dst = dest / "mapelab" / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return dest


@register("linux-vm")
class LinuxVmCe(ReferenceCe):
    """The reference CE in a CI Linux guest on a VM slot's TAPs.

    ``state_dir`` (on the host) gets ``ce.log`` (the daemon's log), ``state.json`` (its last
    state), ``console-N.log`` (the guest's serial transcript) and ``driver.log`` (what this driver
    did, with timings).  ``tunnel`` defaults to ``ip6tnl``: the point of this backend.
    ``start_timeout`` bounds boot plus daemon start (default: accelerator-scaled, 150 s × 4 under
    TCG); ``accel``, ``cpus`` and ``memory_mb`` go to the guest.
    """

    slot_kind: ClassVar[str] = "vm"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        tunnel: str = "ip6tnl",
        faults: Sequence[str] = (),
        max_rt: float = 4.0,
        verbose: bool = False,
        accel: str | None = None,
        cpus: int = 1,
        memory_mb: int = 512,
        start_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="mapelab-cevm-"))
        self.tunnel = tunnel
        self.faults = tuple(faults)
        self.max_rt = max_rt
        self.verbose = verbose
        self.accel = accel
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._given_name = name
        self.name = name or ""  # the machine's name, chosen at start()
        self.guest: Any = None  # mapelab.guests.linux.LinuxGuest while booted
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set when the guest is up and the daemon launched, or boot failed
        self._stop = threading.Event()  # set by teardown: the keeper thread stops QEMU
        self._error: BaseException | None = None
        self._start_timeout = 0.0
        self._deadline = 0.0
        self.pid: int | None = None  # the daemon's PID in the guest
        self.wan: str | None = None  # guest interface names, found by MAC
        self.lan: str | None = None
        self.timings: dict[str, float] = {}
        self._launched_at: float | None = None  # guest epoch of the daemon's launch (boot-to-provisioned)

    def attach(self, slot: CeSlot) -> None:
        if slot.kind != "vm" or not slot.wan_tap or not slot.lan_tap:
            raise CeError(
                f"backend linux-vm needs a VM slot (two TAPs), but slot {slot.index} is kind {slot.kind!r}; "
                "bring the testbed up with vm_slots (invoke testbed.up --vm-slots 1,2) or use backend linux"
            )
        for tap in (slot.wan_tap, slot.lan_tap):
            if not Path("/sys/class/net", tap).exists():
                raise CeError(f"slot {slot.index}: TAP {tap} does not exist; is the testbed up?")
        super().attach(slot)

    # -- the guest --------------------------------------------------------------------------------

    def _say(self, msg: str) -> None:
        """Driver log lines (boot progress, timings) into ``state_dir/driver.log``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "driver.log").open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def _keeper(self) -> None:
        """The guest's own thread: boot, upload, launch the daemon, then hold QEMU until teardown.

        Why a thread per guest: QEMU is SIGKILLed when the thread that started it ends (so a
        killed harness leaves no guest), hence the thread must live exactly as long as the guest;
        and two CEs boot in parallel because ``start()`` returns at once.  A boot that fails
        (no host key, no SSH) is tried once more on a fresh overlay while ``start_timeout``
        leaves room: under TCG on a loaded host a boot occasionally stalls.
        """
        from mapelab.qemu.errors import QemuError

        try:
            for attempt in (1, 2):
                t0 = time.monotonic()
                try:
                    self._boot_and_hold(t0)
                    return
                except QemuError as e:
                    self._keep_console(suffix=f"-attempt{attempt}")
                    left = self._deadline - time.monotonic()
                    self._say(f"boot attempt {attempt} of {self.name} failed after {time.monotonic() - t0:.0f} s: "
                              f"{type(e).__name__}: {e}")
                    if attempt == 2 or self._stop.is_set() or left < time.monotonic() - t0:
                        raise
                    self.name = f"{self.name.rsplit('-r', 1)[0]}-r{attempt}"
        except BaseException as e:  # handed to the main thread, which raises it from _up()
            self._error = e
            self._say(f"guest {self.name} failed ({type(e).__name__}); no more attempts")
        finally:
            self.guest = None
            self._ready.set()

    def _boot_and_hold(self, t0: float) -> None:
        from mapelab.guests import linux
        from mapelab.qemu.spec import TapNic

        slot = self._slot()
        assert slot.wan_tap and slot.lan_tap
        with linux.boot(taps=(TapNic(slot.wan_tap, host_mtu=slot.wan_mtu), slot.lan_tap), name=self.name,
                        accel=self.accel, cpus=self.cpus, memory_mb=self.memory_mb, progress=self._say) as g:
            self.guest = g
            try:
                self.timings["boot_to_ssh"] = round(time.monotonic() - t0, 1)
                if self._stop.is_set():
                    return
                with tempfile.TemporaryDirectory(prefix="mapelab-cevm-") as tmp:
                    g.ssh.put_tree(stage_package(Path(tmp)), GUEST_TOP)
                self.wan = g.iface_for_tap(slot.wan_tap)
                self.lan = g.iface_for_tap(slot.lan_tap)
                self._launch()
                self.timings["start"] = round(time.monotonic() - t0, 1)
                self._say(f"guest {self.name}: WAN {self.wan}, LAN {self.lan}; timings {self.timings}")
                self._ready.set()
                self._stop.wait()
            finally:
                self._keep_console()  # before boot() removes the run directory
                self.guest = None

    def _up(self, what: str) -> None:
        """Block until the guest is booted and the daemon launched (within ``start_timeout``)."""
        if self._thread is None:
            raise CeError(f"{what}: the linux-vm CE is not started; call start() first")
        left = max(0.0, self._deadline - time.monotonic())
        if not self._ready.wait(left):
            raise CeError(f"{what}: the linux-vm guest for slot {self._slot().index} was not up within "
                          f"start_timeout ({self._start_timeout:.0f} s); see {self.state_dir}/driver.log and the "
                          "console transcript; raise start_timeout or MAPELAB_TIMEOUT_SCALE on a slow host")
        if self._error is not None:
            e = self._error
            raise CeError(f"{what}: the linux-vm guest for slot {self._slot().index} did not come up: "
                          f"{type(e).__name__}: {e}. Evidence (console transcript, QEMU stderr, driver.log) is in "
                          f"{self.state_dir}") from e
        if self.guest is None:
            raise CeError(f"{what}: the linux-vm guest has been stopped")

    def _keep_console(self, suffix: str = "") -> None:
        """Copy the guest's console transcripts and QEMU's stderr into ``state_dir`` (evidence)."""
        from mapelab.qemu.machine import runs_dir

        if self.guest is None and not self.name:
            return
        run_dir = self.guest.machine.run_dir if self.guest is not None else runs_dir() / self.name
        if not run_dir.is_dir():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for f in [*run_dir.glob("console-*.log"), run_dir / "qemu.stderr", run_dir / "machine.json"]:
            with contextlib.suppress(OSError):
                shutil.copy2(f, self.state_dir / f"{f.stem}{suffix}{f.suffix}")

    def _ssh(self, command: str, *, timeout: float = 30, check: bool = False) -> Any:
        if self.guest is None:
            raise CeError("the linux-vm CE's guest is not running; call start() first")
        return self.guest.run(command, timeout=timeout, check=check)

    # -- the daemon -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        slot = self._slot()
        assert self.wan and self.lan
        argv = [
            "python3", "-m", "mapelab.ce.linux", "--wan", self.wan, "--lan", self.lan,
            "--lan-address", f"{slot.lan_gateway}/{slot.lan_prefix.prefixlen}",
            "--state-dir", GUEST_STATE, "--tunnel", self.tunnel, "--max-rt", str(self.max_rt),
        ]
        for f in self.faults:
            argv += ["--fault", f]
        if self.verbose:
            argv.append("-v")
        return argv

    def _launch(self) -> None:
        """Start the daemon detached from the SSH session; ``$!`` is its PID (``setsid`` and
        ``nohup`` exec, and a non-interactive shell's background job is no group leader, so
        ``setsid`` does not fork)."""
        cmd = shlex.join(self.command())
        log = f"{GUEST_STATE}/ce.log"
        # Only the daemon's simple command is backgrounded (``a && b & echo $!`` would background a
        # subshell and report its PID).
        script = (
            f"set -e; mkdir -p {GUEST_STATE}; cd {GUEST_TOP}; "
            f"echo \"--- start $(date +%FT%T): {cmd}\" >> {log}; "
            f"PYTHONPATH={GUEST_TOP} setsid nohup {cmd} >> {log} 2>&1 < /dev/null & echo $! $(date +%s.%N)"
        )
        r = self._ssh(script, timeout=60)
        try:
            pid, at = r.stdout.strip().splitlines()[-1].split()
            self.pid, self._launched_at = int(pid), float(at)  # the guest's clock, as applied_at is
        except (ValueError, IndexError):
            raise CeError(f"could not start the CE daemon in the guest (exit {r.status}): "
                          f"{(r.stderr or r.stdout).strip()[-400:]}") from None
        self._say(f"daemon started, pid {self.pid}: {cmd}")

    def start(self) -> None:
        """Boot the guest in its own thread and return at once; :meth:`wait_provisioned` waits for
        the boot (within ``start_timeout``) and then for provisioning (within its own timeout)."""
        if self._thread is not None and self._thread.is_alive():
            if self._ready.is_set() and self.guest is not None and not self._daemon_alive():
                self._launch()  # after restart(): the guest is up, only the daemon is new
            return
        from mapelab.qemu import accel as accel_mod
        from mapelab.qemu.machine import unique_name

        slot = self._slot()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.name = self._given_name or unique_name(f"cevm{slot.index}")
        self._start_timeout = self.start_timeout or accel_mod.choose(self.accel).timeout(150)
        self._deadline = time.monotonic() + self._start_timeout
        self._ready, self._stop, self._error = threading.Event(), threading.Event(), None
        self._thread = threading.Thread(target=self._keeper, name=f"linux-vm {self.name}", daemon=True)
        self._thread.start()

    def _daemon_alive(self) -> bool:
        if self.pid is None or self.guest is None:
            return False
        return self._ssh(f"kill -0 {self.pid}").status == 0

    def _signal(self, sig: str) -> None:
        if self.pid is not None:
            self._ssh(f"kill -{sig} {self.pid}")

    def _stop_daemon(self, sig: str, grace: float = 10.0) -> None:
        """Signal the daemon and wait for it to exit (SIGKILL after ``grace``); keep its log."""
        if self.pid is None or self.guest is None:
            return
        pid = self.pid
        self._ssh(f"kill -{sig} {pid}; for i in $(seq {int(grace * 10)}); do kill -0 {pid} 2>/dev/null || exit 0; "
                  f"sleep 0.1; done; kill -KILL {pid}; sleep 0.5", timeout=grace + 30)
        self.pid = None
        self._fetch_evidence()

    def _fetch_evidence(self) -> None:
        """The guest's ce.log and state.json into ``state_dir`` (best effort: evidence, not control)."""
        if self.guest is None:
            return
        for name in ("ce.log", "state.json"):
            with contextlib.suppress(Exception):
                r = self._ssh(f"cat {GUEST_STATE}/{name}", timeout=30)
                if r.status == 0:
                    (self.state_dir / name).write_text(r.stdout)

    def teardown(self) -> None:
        """Daemon first (RELEASE and withdraw, its log and state kept), then QEMU; idempotent."""
        thread = self._thread
        if thread is None:
            return
        try:
            if self._ready.is_set() and self.guest is not None:
                with contextlib.suppress(Exception):
                    self._stop_daemon("TERM")
        finally:
            self._stop.set()  # first: a boot ended below must not be retried
            booting = thread.is_alive() and not self._ready.is_set()
            if booting:
                # Interrupted mid-boot (Ctrl-C, a failed sibling CE): stop QEMU by its record now
                # (QMP is held by the booting thread, so this ends in SIGTERM by recorded PID).
                from mapelab.qemu.machine import stop_recorded

                with contextlib.suppress(Exception):
                    self._say(stop_recorded(self.name, timeout=2))
            # A boot whose QEMU is gone can still sit in its SSH wait (up to minutes): do not wait
            # for it; the thread is a daemon and QEMU is already stopped.
            thread.join(15 if booting else 120)
            if thread.is_alive():
                self._say(f"guest thread of {self.name} still winding down; QEMU stopped, not waiting for it")
            self._thread = None
            self.pid = None
            self._say(f"guest stopped; timings {self.timings}")

    def restart(self, *, graceful: bool = True) -> None:
        self._up("restart")
        self._stop_daemon("TERM" if graceful else "KILL")
        self._launch()

    def renew(self) -> None:
        self._up("renew")
        self._alive_or_raise("renew")
        self._signal("USR1")

    # -- observation ------------------------------------------------------------------------------

    def _read(self) -> tuple[bool, dict[str, Any] | None]:
        """(daemon alive, its state.json or None) in one SSH round trip."""
        if self.pid is None:
            return False, None
        r = self._ssh(f"kill -0 {self.pid} 2>/dev/null && echo alive || echo dead; "
                      f"cat {GUEST_STATE}/state.json 2>/dev/null")
        first, _, rest = r.stdout.partition("\n")
        try:
            st = json.loads(rest) if rest.strip() else None
        except json.JSONDecodeError:
            st = None
        if st is not None and st.get("pid") != self.pid:
            st = None  # left by an earlier daemon
        return first.strip() == "alive", st

    def log_tail(self, lines: int = 15) -> str:
        if self.guest is None:
            return "(guest not running)"
        with contextlib.suppress(Exception):
            r = self._ssh(f"tail -n {lines} {GUEST_STATE}/ce.log")
            if r.status == 0:
                return "last log lines (guest " + GUEST_STATE + "/ce.log):\n  " + "\n  ".join(r.stdout.splitlines())
        return "(no log)"

    poll_interval = 0.25  # each read is an SSH round trip

    def _wait_until_up(self, what: str) -> None:
        self._up(what)

    def _not_running(self) -> str:
        if self.pid is None or self.guest is None:
            return "the CE is not running; call start() first"
        return f"the CE daemon (pid {self.pid} in the guest) has exited"

    def wait_provisioned(self, timeout: float = 30.0, *, different_from: CeParams | None = None) -> CeParams:
        got = super().wait_provisioned(timeout, different_from=different_from)
        if "boot_to_provisioned" not in self.timings:
            self._time_provisioning()
        return got

    def _time_provisioning(self) -> None:
        """Boot-to-provisioned from the guest's own clock (``applied_at`` − launch), so a caller
        that waits for another CE first does not inflate it."""
        st = self.read_state() or {}
        if self._launched_at is None or not st.get("applied_at"):
            return
        with contextlib.suppress(TypeError, ValueError, KeyError):
            took = round(datetime.fromisoformat(st["applied_at"]).timestamp() - self._launched_at, 1)
            self.timings["daemon_to_provisioned"] = took
            self.timings["boot_to_provisioned"] = round(self.timings["start"] + took, 1)
            self._say(f"provisioned; timings {self.timings}")

    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``argv`` in the guest over SSH, with the uploaded mapelab importable (``python3 -m mapelab…``)."""
        self._up("run_in_ce")
        r = self._ssh(f"cd {GUEST_TOP} && PYTHONPATH={GUEST_TOP} {shlex.join(argv)}", timeout=timeout)
        return subprocess.CompletedProcess(list(argv), r.status, r.stdout, r.stderr)

    def state(self) -> dict[str, Any]:
        st = super().state()
        st["guest"] = {"name": getattr(self.guest, "name", None), "wan": self.wan, "lan": self.lan,
                       "timings": dict(self.timings)}
        return st
