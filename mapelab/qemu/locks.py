"""File locks for images and machines, with holder records that outlive a crash.

Why both ``fcntl.flock`` and holder records: the flock is what actually excludes (the kernel
drops it when the last holder of the open file dies, so a crash can never leave a lock that
blocks forever), and the holder record (a small JSON file per holder: PIDs, purpose, start time)
is what lets the next run *say* what happened — "the harness PID 1234 that booted X is gone;
its lock was cleaned" — and what lets a busy error name the live owner and the fix.

A lock's open file can be handed to QEMU (``pass_fds``): the flock then stays held as long as
QEMU runs, even if the harness that started it is gone (a detached machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cache
from .errors import LockBusy

_NAME_OK = re.compile(r"^[A-Za-z0-9._@+-]+$")


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone.

    Recorded with every PID so a reused PID is never mistaken for the original owner.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = stat[stat.rfind(")") + 2 :].split()
    try:
        if rest[0] == "Z":
            # a zombie leader is gone only once its other threads are: they share its open files
            # (and so its flocks) until the last one exits
            try:
                if len(os.listdir(f"/proc/{pid}/task")) <= 1:
                    return None
            except OSError:
                return None
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start_time: int | None) -> bool:
    """True if ``pid`` runs and is the same process as recorded (same start time)."""
    now = proc_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


@dataclass
class Holder:
    """One holder of a lock: the PIDs whose life keeps it held, and why it was taken."""

    pids: dict[str, list[int | None]]  # role -> [pid, start_time]
    purpose: str
    since: float
    shared: bool
    record: Path | None = field(default=None, compare=False)

    def alive(self) -> bool:
        return any(pid_alive(int(p[0]), p[1]) for p in self.pids.values() if p and p[0])

    def describe(self) -> str:
        who = ", ".join(f"{role} PID {p[0]}" for role, p in self.pids.items() if p and p[0])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.purpose or 'unnamed'} ({who}; since {when})"

    def to_json(self) -> dict:
        return {"pids": self.pids, "purpose": self.purpose, "since": self.since, "shared": self.shared}

    @classmethod
    def from_json(cls, d: dict, record: Path) -> Holder:
        return cls(
            pids={k: list(v) for k, v in d.get("pids", {}).items()},
            purpose=str(d.get("purpose", "")),
            since=float(d.get("since", 0)),
            shared=bool(d.get("shared", False)),
            record=record,
        )


class Lock:
    """A named lock under ``<cache>/locks``: exclusive (writers) or shared (readers).

    Use as a context manager or call :meth:`acquire` / :meth:`release`.  ``acquire`` first sweeps
    stale holder records (every recorded PID gone) and announces each cleanup through
    :func:`mapelab.qemu.cache.notice`; the cleanup messages are also kept in ``cleaned``.
    """

    def __init__(self, name: str, *, shared: bool = False, purpose: str = "", root: Path | None = None) -> None:
        if not _NAME_OK.match(name):
            raise ValueError(f"lock name {name!r}: use letters, digits and . _ @ + - only")
        self.name = name
        self.shared = shared
        self.purpose = purpose
        self.dir = cache.sub("locks", root)
        self.path = self.dir / f"{name}.lock"
        self.holders_dir = self.dir / f"{name}.holders"
        self.fd: int | None = None
        self.record: Path | None = None
        self.cleaned: list[str] = []
        self._pids: dict[str, list[int | None]] = {}

    # -- inspection -------------------------------------------------------------------------
    def holders(self) -> list[Holder]:
        """Every holder record, live or stale."""
        out: list[Holder] = []
        if not self.holders_dir.is_dir():
            return out
        for rec in sorted(self.holders_dir.glob("*.json")):
            d = cache.read_json(rec)
            if isinstance(d, dict):
                out.append(Holder.from_json(d, rec))
        return out

    def sweep_stale(self, *, all_stale: bool = False, quiet: bool = False) -> list[str]:
        """Remove holder records whose processes are all gone (or every other record if ``all_stale``).

        Returns one message per record cleaned, and says each through :func:`cache.notice` unless
        ``quiet`` (used right after an orderly stop, where nothing went wrong).
        """
        msgs: list[str] = []
        for h in self.holders():
            if h.record == self.record:
                continue
            if all_stale or not h.alive():
                msg = f"stale lock on {self.name!r}: holder {h.describe()} is gone; cleaned"
                with contextlib.suppress(FileNotFoundError):
                    assert h.record is not None
                    h.record.unlink()
                msgs.append(msg)
                if not quiet:
                    cache.notice(msg)
        self.cleaned.extend(msgs)
        return msgs

    # -- acquire / release -----------------------------------------------------------------
    def acquire(self) -> Lock:
        """Take the lock without waiting on a live holder; raise :class:`LockBusy` naming it and the fix."""
        if self.fd is not None:
            return self
        self.sweep_stale()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        grace = time.monotonic() + 3.0  # a holder that is dying still holds the flock for a moment
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                live = [h.describe() for h in self.holders() if h.alive()]
                if not live and time.monotonic() < grace:
                    time.sleep(0.1)
                    continue
            os.close(fd)
            live = live or ["an unrecorded process"]
            raise LockBusy(
                f"{self.name!r} is in use by {'; '.join(live)}: stop that machine "
                f"(invoke vm.stop) or wait for it to finish, then retry"
            ) from None
        self.fd = fd
        if not self.shared:
            # we hold it exclusively: any record left is from a holder that no longer holds the flock
            self.sweep_stale(all_stale=True)
        self.holders_dir.mkdir(mode=0o700, exist_ok=True)
        me = os.getpid()
        self._pids = {"owner": [me, proc_start_time(me)]}
        self.record = self.holders_dir / f"{me}-{id(self):x}.json"
        self._write_record()
        return self

    def add_pid(self, role: str, pid: int) -> None:
        """Record another process (e.g. QEMU) whose life keeps this lock held."""
        self._pids[role] = [pid, proc_start_time(pid)]
        self._write_record()

    def detach_owner(self) -> None:
        """Forget the harness as a holder: the lock now lives only as long as the other recorded PIDs.

        Used for detached machines, where QEMU holds the inherited lock file after we exit.
        """
        self._pids.pop("owner", None)
        self._write_record()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.record = None

    def _write_record(self) -> None:
        if self.record is None:
            return
        h = Holder(pids=self._pids, purpose=self.purpose, since=time.time(), shared=self.shared)
        cache.write_json(self.record, h.to_json(), mode=0o600)

    def release(self) -> None:
        if self.record is not None:
            with contextlib.suppress(FileNotFoundError):
                self.record.unlink()
            self.record = None
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def is_free(self) -> bool:
        """True if nobody (including us) holds the flock right now; does not take it."""
        if not self.path.exists():
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
