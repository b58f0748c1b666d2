"""Backend ``linux-vm``: the reference CE daemon inside the CI Linux guest, on the guest kernel's ip6tnl.

Why it exists: the namespace backend (``linux``) proves the e2e suite against a CE that shares
the host's kernel, which here has no ip6tnl, so the daemon falls back to its userspace tunnel.
This backend runs the *same* daemon (``python3 -m mapelab.ce.daemon``) in a QEMU guest attached to
a testbed VM slot by its two TAPs, with ``--tunnel ip6tnl``: the kernel datapath a real Linux CE
uses, and the same VM plumbing (boot, console, SSH, TAPs, the keeper) the OpenBSD CE stands on.

How it maps onto the driver interface:

* ``start()`` hands the guest to a :class:`~mapelab.ce.vmkeeper.VmKeeper`: it boots (building the
  image on first use), uploads what the daemon imports (``reference.DAEMON_FILES``), finds the WAN
  and LAN NICs by MAC and starts the daemon detached from the SSH session.
* Observation reads the guest's ``state.json`` over SSH; a state file is trusted only when its
  ``pid`` is the daemon this driver started (as the namespace backend does).
* Signals go by PID: SIGUSR1 renews, SIGTERM releases and withdraws, SIGKILL is the ungraceful restart.
* ``teardown()`` stops the daemon, copies its log, last state and the console transcript into
  ``state_dir``, then stops QEMU through the QMP ladder.  Idempotent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, ClassVar

from mapelab.testbed.status import CeSlot

from .driver import Capability, CeError, CeParams, CeState, Readiness, register
from .reference import DAEMON_FILES, DaemonOptions, ReferenceCe, daemon_argv
from .vmkeeper import VmKeeper, require_vm_slot

PKG = Path(__file__).resolve().parents[1]  # the mapelab package directory
GUEST_TOP = "/opt/mapelab"  # PYTHONPATH in the guest
GUEST_STATE = "/var/lib/mapelab-ce"  # the daemon's --state-dir in the guest


def stage_package(dest: Path) -> Path:
    """Copy the daemon's part of mapelab under ``dest/mapelab`` (mtimes kept); return ``dest``."""
    for rel in DAEMON_FILES:
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
    poll_interval: ClassVar[float] = 0.25  # each read is an SSH round trip

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
        capabilities_off: Sequence[str] = (),
    ) -> None:
        super().__init__(daemon=DaemonOptions(tunnel, max_rt, tuple(faults), verbose),
                         capabilities_off=capabilities_off)
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="mapelab-cevm-"))
        self.accel = accel
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._given_name = name
        self.keeper: VmKeeper | None = None
        self.pid: int | None = None  # the daemon's PID in the guest
        self.wan: str | None = None  # guest interface names, found by MAC
        self.lan: str | None = None
        self._launched_at: float | None = None  # guest epoch of the daemon's launch (boot-to-provisioned)

    @classmethod
    def image_ready(cls, **options: Any) -> Readiness:
        from mapelab.guests import linux
        from mapelab.qemu import images

        try:
            key = linux.image_key()
        except Exception as e:  # a broken recipe is not ready, and says why
            return Readiness(False, f"the Linux guest recipe cannot be read: {e}")
        if images.find(key) is not None:
            return Readiness(True, f"Linux guest image {key}")
        return Readiness(False, f"the Linux guest image {key} is not built (it builds on first use, about 90 s; "
                                "invoke vm.build-linux builds it now)")

    def attach(self, slot: CeSlot) -> None:
        require_vm_slot(slot, "linux-vm")
        super().attach(slot)

    # -- the guest --------------------------------------------------------------------------------

    @property
    def guest(self) -> Any:
        return self.keeper.guest if self.keeper is not None else None

    @property
    def timings(self) -> dict[str, float]:
        return self.keeper.timings if self.keeper is not None else {}

    def _boot(self, name: str, say: Callable[[str], None]) -> contextlib.AbstractContextManager[Any]:
        from mapelab.guests import linux
        from mapelab.qemu.spec import TapNic

        slot = self._slot()
        assert slot.wan_tap and slot.lan_tap
        return linux.boot(taps=(TapNic(slot.wan_tap, host_mtu=slot.wan_mtu), slot.lan_tap), name=name,
                          accel=self.accel, cpus=self.cpus, memory_mb=self.memory_mb, progress=say)

    def _setup(self, g: Any) -> None:
        slot = self._slot()
        assert slot.wan_tap and slot.lan_tap
        with tempfile.TemporaryDirectory(prefix="mapelab-cevm-") as tmp:
            g.ssh.put_tree(stage_package(Path(tmp)), GUEST_TOP)
        self.wan = g.iface_for_tap(slot.wan_tap)
        self.lan = g.iface_for_tap(slot.lan_tap)
        self._launch(g)
        assert self.keeper is not None
        self.keeper.say(f"guest {g.name}: WAN {self.wan}, LAN {self.lan}")

    def _ssh(self, command: str, *, timeout: float = 30, check: bool = False) -> Any:
        g = self.guest
        if g is None:
            raise CeError("the linux-vm CE's guest is not running; call start() first")
        return g.run(command, timeout=timeout, check=check)

    # -- the daemon -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        slot = self._slot()
        assert self.wan and self.lan
        lan = IPv4Interface(f"{slot.lan_gateway}/{slot.lan_prefix.prefixlen}")
        return daemon_argv("python3", self.wan, self.lan, lan, GUEST_STATE, self.daemon)

    def _launch(self, g: Any = None) -> None:
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
        r = (g or self.guest).run(script, timeout=60)
        try:
            pid, at = r.stdout.strip().splitlines()[-1].split()
            self.pid, self._launched_at = int(pid), float(at)  # the guest's clock, as applied_at is
        except (ValueError, IndexError):
            raise CeError(f"could not start the CE daemon in the guest (exit {r.status}): "
                          f"{(r.stderr or r.stdout).strip()[-400:]}") from None
        if self.keeper is not None:
            self.keeper.say(f"daemon started, pid {self.pid}: {cmd}")

    def start(self) -> None:
        """Boot the guest in the keeper's thread and return at once; :meth:`wait_provisioned` waits
        for the boot (within ``start_timeout``) and then for provisioning (within its own timeout)."""
        if self.keeper is not None and self.keeper.alive:
            if self.keeper.up_now and not self._daemon_alive():
                self._launch()  # after restart(): the guest is up, only the daemon is new
            return
        from mapelab.qemu import accel as accel_mod
        from mapelab.qemu.machine import unique_name

        slot = self._slot()
        timeout = self.start_timeout or accel_mod.choose(self.accel).timeout(150)
        self.keeper = VmKeeper("linux-vm", self.state_dir, self._boot, self._setup, start_timeout=timeout)
        self.keeper.start(self._given_name or unique_name(f"cevm{slot.index}"))

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
        if self.keeper is None:
            return
        self.keeper.stop(before_qemu=lambda _g: self._stop_daemon("TERM"))
        self.pid = None

    def restart(self, *, graceful: bool = True) -> None:
        self.require(Capability.RESTART, "restart")
        self._up("restart")
        self._stop_daemon("TERM" if graceful else "KILL")
        self._launch()

    def renew(self) -> None:
        self.require(Capability.RENEW, "renew")
        self._up("renew")
        self._alive_or_raise("renew")
        self._signal("USR1")

    # -- observation ------------------------------------------------------------------------------

    def _up(self, what: str) -> None:
        if self.keeper is None:
            raise CeError(f"{what}: the linux-vm CE is not started; call start() first")
        self.keeper.up(what)

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
        if self._launched_at is None or not st.get("applied_at") or self.keeper is None:
            return
        with contextlib.suppress(TypeError, ValueError, KeyError):
            took = round(datetime.fromisoformat(st["applied_at"]).timestamp() - self._launched_at, 1)
            self.timings["daemon_to_provisioned"] = took
            self.timings["boot_to_provisioned"] = round(self.timings["start"] + took, 1)
            self.keeper.say(f"provisioned; timings {self.timings}")

    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``argv`` in the guest over SSH, with the uploaded mapelab importable (``python3 -m mapelab…``)."""
        self._up("run_in_ce")
        r = self._ssh(f"cd {GUEST_TOP} && PYTHONPATH={GUEST_TOP} {shlex.join(argv)}", timeout=timeout)
        return subprocess.CompletedProcess(list(argv), r.status, r.stdout, r.stderr)

    def state(self) -> CeState:
        st = super().state()
        g = self.guest
        extra = {**st.extra, "guest": {"name": getattr(g, "name", None), "wan": self.wan, "lan": self.lan,
                                       "timings": dict(self.timings)}}
        return dataclasses.replace(st, extra=extra)
