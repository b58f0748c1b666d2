"""A minimal DHCPv6 requesting client for probing the ISP from a CE slot's namespace.

``ip netns exec CE python -m mapelab.testbed.dhcp6client --iface WAN [--no-oro94] [--renew]``
prints JSON: the server's ADVERTISE and REPLY options (hex, by code), the delegated prefix(es)
and the raw OPTION_S46_CONT_MAPE — whatever bytes the server really put on the wire, for the
tests to decode with :mod:`mapelab.mape`.  Plain UDP sockets, no scapy: it starts in
milliseconds and does exactly SOLICIT → ADVERTISE → REQUEST → REPLY (then RENEW or REBIND on
demand), which is all a probe needs.  Not a CE: it configures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

from mapelab.netio import dhcp6 as w


class Client:
    def __init__(self, iface: str, oro: list[int], timeout: float) -> None:
        self.iface = iface
        self.ifindex = socket.if_nametoindex(iface)
        self.oro = tuple(oro)
        self.timeout = timeout
        mac = Path(f"/sys/class/net/{iface}/address").read_text().strip()
        self.duid = w.duid_ll(bytes.fromhex(mac.replace(":", "")))
        self.iaid = 1
        self.s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        self.s.bind(("::", w.CLIENT_PORT, 0, self.ifindex))
        self.s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        self.start = time.monotonic()

    def exchange(self, mtype: int, want: int, *, server: bytes | None = None, prefixes: tuple[w.IaPrefix, ...] = (),
                 tries: int = 3) -> tuple[bytes, w.Message]:
        xid = int.from_bytes(os.urandom(3), "big")
        elapsed = int((time.monotonic() - self.start) * 100)
        msg = w.client_message(mtype, xid, self.duid, self.iaid, elapsed_cs=elapsed, server_duid=server,
                               prefixes=prefixes, oro=self.oro).encode()
        for _ in range(tries):
            self.s.sendto(msg, (w.ALL_SERVERS, w.SERVER_PORT, 0, self.ifindex))
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                self.s.settimeout(left)
                try:
                    data, _ = self.s.recvfrom(65535)
                except TimeoutError:
                    break
                if len(data) >= 4 and data[0] == want and int.from_bytes(data[1:4], "big") == xid:
                    return data, w.Message.decode_until_error(data)[0]
        raise TimeoutError(f"no answer of type {want} to message type {mtype} on {self.iface} "
                           f"after {tries} tries of {self.timeout} s")


def _prefixes(msg: w.Message) -> list[w.IaPrefix]:
    return [p for body in msg.get_all(w.OPT_IA_PD) for p in w.decode_ia_pd(body).prefixes]


def summary(kind: str, raw: bytes, msg: w.Message) -> dict[str, Any]:
    """What the server sent: options by code, prefixes, option 94 — and, when the message does not
    decode (the faulty responder's job), where the strict codec stopped: what a client would refuse."""
    error = w.Message.decode_until_error(raw)[1]
    by_code: dict[str, list[str]] = {}
    for code, body in msg.options:
        by_code.setdefault(str(code), []).append(body.hex())
    prefixes = [{"prefix": str(p.prefix), "preferred": p.preferred, "valid": p.valid} for p in _prefixes(msg)]
    mape = [w.option(w.OPT_S46_CONT_MAPE, b).hex() for b in msg.get_all(w.OPT_S46_CONT_MAPE)]
    return {"type": kind, "raw": raw.hex(), "options": by_code, "prefixes": prefixes, "option94": mape,
            "malformed": str(error) if error else None}


def _offered(msg: w.Message) -> tuple[w.IaPrefix, ...]:
    """What a REQUEST/RENEW/REBIND asks for again: the prefixes the server offered, lifetimes zeroed."""
    return tuple(w.IaPrefix(p.prefix, 0, 0) for p in _prefixes(msg))


def run(iface: str, oro94: bool = True, then: str | None = None, timeout: float = 1.0) -> dict[str, Any]:
    c = Client(iface, [w.OPT_S46_CONT_MAPE] if oro94 else [], timeout)
    adv_raw, adv = c.exchange(w.SOLICIT, w.ADVERTISE)
    server_id = adv.get(w.OPT_SERVERID)
    if server_id is None:
        raise w.Dhcp6Error("ADVERTISE without SERVERID")
    rep_raw, rep = c.exchange(w.REQUEST, w.REPLY, server=server_id, prefixes=_offered(adv))
    out = {"advertise": summary("advertise", adv_raw, adv), "reply": summary("reply", rep_raw, rep)}
    if then in ("renew", "rebind"):
        mtype = w.RENEW if then == "renew" else w.REBIND
        raw, r = c.exchange(mtype, w.REPLY, server=server_id if then == "renew" else None, prefixes=_offered(rep))
        out[then] = summary(then, raw, r)
    return out


def rebind(iface: str, prefix: str, oro94: bool = True, timeout: float = 1.0) -> dict[str, Any]:
    """A REBIND for ``prefix`` alone (what a CE sends at T2): the server answers with the lease it now holds."""
    c = Client(iface, [w.OPT_S46_CONT_MAPE] if oro94 else [], timeout)
    raw, r = c.exchange(w.REBIND, w.REPLY, prefixes=(w.IaPrefix(IPv6Network(prefix), 0, 0),))
    return {"rebind": summary("rebind", raw, r)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="probe the DHCPv6 server: SOLICIT/REQUEST (ORO 94), print JSON")
    ap.add_argument("--iface", required=True, help="the CE slot's WAN interface (in this namespace)")
    ap.add_argument("--no-oro94", action="store_true", help="do not ask for option 94 in the ORO")
    ap.add_argument("--then", choices=["renew", "rebind"], default=None, help="a RENEW or REBIND after the REPLY")
    ap.add_argument("--rebind", metavar="PREFIX", default=None,
                    help="only send a REBIND for this delegated prefix (a lease held by an earlier run)")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per try")
    a = ap.parse_args(argv)
    try:
        if a.rebind:
            print(json.dumps(rebind(a.iface, a.rebind, not a.no_oro94, a.timeout)))
        else:
            print(json.dumps(run(a.iface, not a.no_oro94, a.then, a.timeout)))
    except (OSError, w.Dhcp6Error) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "iface": a.iface}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
