"""Processes the testbed starts, identified so that only they are ever signalled.

A PID alone can be reused after its process died; a PID together with the process's start
time (field 22 of ``/proc/PID/stat``) cannot.  Every process a run starts is recorded as such a
pair in the run record, and :func:`kill` refuses to signal a PID whose start time differs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # a zombie is dead for our purposes
        return None
    return int(rest[19])


@dataclass(frozen=True)
class ProcRef:
    """One recorded process: what it is, its PID and the start time that makes the PID unambiguous."""

    name: str
    pid: int
    start: int

    @classmethod
    def of(cls, name: str, pid: int) -> ProcRef:
        st = start_time(pid)
        return cls(name, pid, st if st is not None else -1)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcRef:
        return cls(str(d["name"]), int(d["pid"]), int(d["start"]))


def kill(ref: ProcRef, sig: int = signal.SIGTERM, grace: float = 3.0) -> bool:
    """Send ``sig`` to the recorded process, then SIGKILL after ``grace`` seconds.

    Returns True when a process was signalled.  Never signals a PID that now belongs to
    someone else (start time mismatch).
    """
    if not ref.alive():
        return False
    try:
        os.kill(ref.pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(ref.pid)
        if not ref.alive():
            return True
        time.sleep(0.02)
    if ref.alive():
        try:
            os.kill(ref.pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        for _ in range(100):
            _reap(ref.pid)
            if not ref.alive():
                break
            time.sleep(0.01)
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
