"""Backend ``linux``: the reference CE daemon (``mapelab.ce.daemon``) in the slot's namespace.

Why a subprocess and not a thread: the daemon must be exactly what later runs inside a Linux VM
(its own process, its own namespace, state only through ``state.json``), so the driver treats it
as a black box it starts, signals by PID and reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from mapelab.testbed.status import CeSlot

from .driver import Capability, CeError, register
from .reference import DaemonOptions, ReferenceCe, daemon_argv

REPO = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    """Between fork and exec: SIGTERM the daemon when the process that started it dies.

    The daemon runs in its own session (a Ctrl-C aimed at the harness must not reach it before
    the driver's orderly stop), so without this a harness killed with SIGKILL would leave it
    running in a namespace the testbed's sweep then deletes.  ``ip netns exec`` execs the
    interpreter, and the death signal survives exec.  The signal follows the *thread* that
    forked, so call ``start()`` from a thread that outlives the CE (the main thread in tests).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


@register("linux")
class LinuxNetnsCe(ReferenceCe):
    """The reference CE as a process in ``slot.ce_netns``.

    ``state_dir`` gets ``state.json``, ``ce.pid`` and ``ce.log`` (the daemon's log).  ``tunnel``
    and ``faults`` are passed to the daemon (``faults`` break it on purpose for tests of tests);
    ``capabilities_off`` withdraws capabilities, to prove the suite reports what a CE lacks.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        tunnel: str = "auto",
        faults: Sequence[str] = (),
        max_rt: float = 4.0,
        python: str | None = None,
        verbose: bool = False,
        capabilities_off: Sequence[str] = (),
    ) -> None:
        super().__init__(daemon=DaemonOptions(tunnel, max_rt, tuple(faults), verbose),
                         capabilities_off=capabilities_off)
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="mapelab-ce-"))
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None

    def attach(self, slot: CeSlot) -> None:
        if slot.kind != "netns" or not slot.ce_netns:
            raise CeError(
                f"backend linux runs in a namespace, but slot {slot.index} is kind {slot.kind!r} "
                f"(ce_netns={slot.ce_netns}); use backend linux-vm for VM slots"
            )
        if not Path("/run/netns", slot.ce_netns).exists():
            raise CeError(f"slot {slot.index}: namespace {slot.ce_netns} does not exist; is the testbed up?")
        super().attach(slot)

    # -- process --------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "ce.log"

    def command(self) -> list[str]:
        slot = self._slot()
        assert slot.ce_netns is not None
        lan = IPv4Interface(f"{slot.lan_gateway}/{slot.lan_prefix.prefixlen}")
        return ["ip", "netns", "exec", slot.ce_netns,
                *daemon_argv(self.python, slot.wan_if, slot.lan_if, lan, str(self.state_dir), self.daemon)]

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # state.json stays: a daemon killed with SIGKILL left its MAP address in it for the next
        # one to remove.  Readers below only trust a state.json whose pid is the running daemon's.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with self.log_file.open("ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(self.command())}\n".encode())
            log.flush()
            # ``ip netns exec`` execs the interpreter, so this PID is the daemon's own.
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO), start_new_session=True, preexec_fn=_die_with_parent,
            )

    def _stop(self, sig: int, grace: float = 5.0) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        self.proc = None

    def teardown(self) -> None:
        self._stop(signal.SIGTERM)

    def restart(self, *, graceful: bool = True) -> None:
        self.require(Capability.RESTART, "restart")
        self._stop(signal.SIGTERM if graceful else signal.SIGKILL)
        self.start()

    def renew(self) -> None:
        self.require(Capability.RENEW, "renew")
        self._alive_or_raise("renew")
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)

    # -- observation ----------------------------------------------------------------------------

    def _read(self) -> tuple[bool, dict[str, Any] | None]:
        """(alive, the running daemon's state.json — an older file is not its)."""
        alive = self.proc is not None and self.proc.poll() is None
        try:
            st = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return alive, None
        if self.proc is not None and st.get("pid") != self.proc.pid:
            return alive, None
        return alive, st

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "last log lines:\n  " + "\n  ".join(text[-lines:])

    def _not_running(self) -> str:
        if self.proc is None:
            return "the CE is not running; call start() first"
        return f"the CE daemon exited with status {self.proc.poll()}"

    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        slot = self._slot()
        assert slot.ce_netns is not None
        return subprocess.run(
            ["ip", "netns", "exec", slot.ce_netns, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )


