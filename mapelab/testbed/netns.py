"""Thin, fast plumbing over iproute2 and network namespaces.

Why not pyroute2 everywhere: iproute2's ``-batch`` runs dozens of link commands in one process
(a few milliseconds), its error messages are what a user can paste into a shell, and every
command this module runs is logged so a failed run can be replayed by hand.  Sysctls are
written through ``setns(2)`` from this process (no fork per namespace), which is what keeps
``testbed.up`` well under its five-second budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


class NetError(RuntimeError):
    """A plumbing command failed; the message holds the command, its output and a hint."""


_log_file: Path | None = None


def set_log(path: Path | None) -> None:
    """Every command run from now on is appended to ``path`` (the run's commands.log)."""
    global _log_file
    _log_file = path


def _log(line: str) -> None:
    if _log_file is not None:
        with _log_file.open("a") as f:
            f.write(line.rstrip("\n") + "\n")


def run(cmd: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command, log it, and raise :class:`NetError` with its stderr when it fails."""
    _log("$ " + shlex.join(cmd) + (f"  <<EOF\n{input}EOF" if input else ""))
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout)
    if p.returncode and check:
        raise NetError(
            f"command failed (exit {p.returncode}): {shlex.join(cmd)}\n"
            + (f"input:\n{input}" if input else "")
            + f"stderr: {p.stderr.strip()}\n"
            "fix: run it by hand to see why; `ip netns list` and `ip -br link` show what exists"
        )
    if p.returncode:
        _log(f"  (exit {p.returncode}: {p.stderr.strip()})")
    return p.stdout


def ip_batch(commands: list[str], netns: str | None = None) -> None:
    """Run iproute2 commands (without the leading ``ip``) in one process, optionally in ``netns``."""
    if not commands:
        return
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(cmd, input="".join(c + "\n" for c in commands))


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    return run(["ip"] + (["-n", netns] if netns else []) + list(args), check=check)


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])


def del_netns(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def root_links() -> list[str]:
    """Interface names in the root (current) namespace."""
    return sorted(os.listdir("/sys/class/net"))


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Temporarily move this thread into ``netns`` (sockets opened inside stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetError(f"setns into {netns}: {os.strerror(err)} (needs root; does /run/netns/{netns} exist?)")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise NetError("setns back to the original namespace failed: the process is now confused; exit it")
    finally:
        os.close(own)
        os.close(target)


def sysctls(netns: str, values: dict[str, str | int]) -> None:
    """Write sysctls (``net.ipv6.conf.all.accept_dad`` style) inside ``netns``."""
    _log(f"# sysctl in {netns}: " + " ".join(f"{k}={v}" for k, v in values.items()))
    with entered(netns):
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            try:
                path.write_text(f"{value}\n")
            except OSError as e:
                raise NetError(f"sysctl {key}={value} in {netns}: {e}") from None


def ns_exec(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]
