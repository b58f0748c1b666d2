"""Starting and ending the processes we own (QEMU), so a crash or Ctrl-C never leaves one behind.

Three guards work together:

* the child asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so killing
  the harness with SIGKILL takes its QEMUs with it;
* the child runs in its own session, so a terminal's Ctrl-C reaches only the harness, which then
  stops QEMU in order (QMP quit, SIGTERM, SIGKILL) instead of QEMU dying mid-write;
* we only ever signal a PID we recorded ourselves, and check its start time first, so a reused
  PID is never killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .locks import pid_alive, proc_start_time

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    die_with_parent: bool = True,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session; with ``die_with_parent`` it is SIGKILLed if we die.

    ``die_with_parent`` is tied to the *thread* that calls this: start machines from a thread
    that lives as long as they should.
    """
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()) if die_with_parent else None,
        pass_fds=tuple(pass_fds),
        close_fds=True,
    )


def wait_gone(pid: int, start_time: int | None, timeout: float, popen: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until the process is gone (reaping it if it is our child); True if it is."""
    deadline = time.monotonic() + timeout
    while True:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not pid_alive(pid, start_time):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def signal_recorded(pid: int, start_time: int | None, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process we recorded; True if sent."""
    if start_time is not None and proc_start_time(pid) != start_time:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def cmdline(pid: int) -> list[str]:
    """The process's argv, or [] if gone (used to double-check a PID is a QEMU we started)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
