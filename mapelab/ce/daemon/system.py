"""The few system calls the reference CE makes: iproute2, nft, sysctls, a conntrack flush, atomic files.

Why a module of its own: the CE must run in a namespace on this host and later inside a bare
Linux VM, so everything it touches goes through python3, ``ip`` and ``nft`` only — this file is
the complete list.  Conntrack is flushed over netlink directly (no ``conntrack`` binary needed).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class CeSystemError(RuntimeError):
    """A command the CE ran failed: the message has the command, its stderr and what to check."""


def run(cmd: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=30, check=False)
    if p.returncode and check:
        raise CeSystemError(
            f"{shlex.join(cmd)} failed (exit {p.returncode}): {p.stderr.strip()}"
            + (f"\ninput was:\n{input}" if input else "")
            + "\nfix: run the command by hand in the CE's namespace to see why"
        )
    return p.stdout


def ip(*args: str, check: bool = True) -> str:
    return run(["ip", *args], check=check)


def nft(script: str) -> None:
    run(["nft", "-f", "-"], input=script)


def nft_json(*args: str) -> Any:
    out = run(["nft", "-j", *args], check=False)
    try:
        return json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        return None


def ip_json(*args: str) -> Any:
    out = run(["ip", "-j", *args], check=False)
    try:
        return json.loads(out) if out.strip() else []
    except json.JSONDecodeError:
        return []


def sysctl(path: str, value: str | int) -> None:
    """Write /proc/sys/<path> (dots or slashes); these are per network namespace."""
    p = Path("/proc/sys") / path.replace(".", "/")
    try:
        p.write_text(f"{value}\n")
    except OSError as e:
        raise CeSystemError(f"sysctl {path}={value}: {e}; is /proc/sys writable (root in this namespace)?") from None


def interface_mtu(ifname: str) -> int:
    return int(Path(f"/sys/class/net/{ifname}/mtu").read_text())


def interface_exists(ifname: str) -> bool:
    return Path(f"/sys/class/net/{ifname}").exists()


def ip6tnl_available() -> bool:
    """True when the kernel can make an ip6tnl device (probe with a throw-away device).

    The probe's endpoints are documentation addresses, not ``::``/``::``: once ip6_tunnel is
    loaded its fallback device ``ip6tnl0`` owns any/any, and a second any/any tunnel fails with
    "File exists" — which would read as "no ip6tnl" on exactly the kernels that have it.
    """
    name = f"mlceprobe{os.getpid() % 100000}"
    p = subprocess.run(
        ["ip", "link", "add", name, "type", "ip6tnl", "mode", "ipip6",
         "local", "2001:db8:ffff::1", "remote", "2001:db8:ffff::2"],
        capture_output=True, text=True, check=False,
    )
    if p.returncode == 0:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        return True
    return "File exists" in p.stderr  # a tunnel with these endpoints exists: the kernel has ip6tnl


# -- conntrack flush over netlink (NETLINK_NETFILTER, IPCTNL_MSG_CT_DELETE without a tuple) --------

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


def flush_conntrack(family: int = socket.AF_INET) -> None:
    """Delete every conntrack entry of ``family`` in this namespace — old NAT bindings included.

    Why: after a renumbering, an established flow's conntrack entry still maps it to the old
    address and port; flushing makes its next packet take the new NAT rule (and the guard chain
    drops anything that still carries the old source).
    """
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    body = struct.pack("!BBH", family, 0, 0)  # nfgenmsg: family, version, res_id (big-endian)
    header = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
        s.settimeout(5)
        s.bind((0, 0))
        s.send(header + body)
        reply = s.recv(65536)
    if len(reply) >= 20:
        _len, rtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
        err = struct.unpack_from("=i", reply, 16)[0]
        if rtype == NLMSG_ERROR and err not in (0, -2):  # -ENOENT: nothing to flush
            raise CeSystemError(
                f"conntrack flush failed: {os.strerror(-err)}; is nf_conntrack loaded and are we root here?"
            )


# -- files ----------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
