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
import struct
import sys
import time
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

SOLICIT, ADVERTISE, REQUEST, RENEW, REBIND, REPLY = 1, 2, 3, 5, 6, 7
OPT_CLIENTID, OPT_SERVERID, OPT_ORO, OPT_ELAPSED, OPT_IA_PD, OPT_IAPREFIX, OPT_STATUS = 1, 2, 6, 8, 25, 26, 13
OPT_MAPE = 94
ALL_SERVERS = "ff02::1:2"


def opt(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


def options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, pos)
        out.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def ia_pd_prefixes(body: bytes) -> list[dict[str, Any]]:
    out = []
    for code, sub in options(body[12:]):
        if code == OPT_IAPREFIX and len(sub) >= 25:
            pref, valid, plen = struct.unpack_from("!IIB", sub, 0)
            out.append({"prefix": str(IPv6Network((int.from_bytes(sub[9:25], "big"), plen), strict=False)),
                        "preferred": pref, "valid": valid})
    return out


class Client:
    def __init__(self, iface: str, oro: list[int], timeout: float) -> None:
        self.iface = iface
        self.ifindex = socket.if_nametoindex(iface)
        self.oro = oro
        self.timeout = timeout
        mac = Path(f"/sys/class/net/{iface}/address").read_text().strip()
        self.duid = struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))  # DUID-LL
        self.iaid = 1
        self.s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        self.s.bind(("::", 546, 0, self.ifindex))
        self.s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        self.start = time.monotonic()

    def message(self, mtype: int, xid: int, extra: bytes) -> bytes:
        elapsed = min(0xFFFF, int((time.monotonic() - self.start) * 100))
        body = opt(OPT_CLIENTID, self.duid) + opt(OPT_ELAPSED, struct.pack("!H", elapsed))
        if self.oro:
            body += opt(OPT_ORO, b"".join(struct.pack("!H", c) for c in self.oro))
        return struct.pack("!I", (mtype << 24) | xid) + body + extra

    def exchange(self, mtype: int, extra: bytes, want: int, tries: int = 3) -> tuple[bytes, list[tuple[int, bytes]]]:
        xid = int.from_bytes(os.urandom(3), "big")
        msg = self.message(mtype, xid, extra)
        for _ in range(tries):
            self.s.sendto(msg, (ALL_SERVERS, 547, 0, self.ifindex))
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                self.s.settimeout(left)
                try:
                    data, _ = self.s.recvfrom(65535)
                except TimeoutError:
                    break
                if len(data) >= 4 and data[0] == want and int.from_bytes(data[1:4], "big") == xid:
                    return data, options(data[4:])
        raise TimeoutError(f"no answer of type {want} to message type {mtype} on {self.iface} "
                           f"after {tries} tries of {self.timeout} s")

    def ia_pd(self, prefix_opts: bytes = b"") -> bytes:
        return opt(OPT_IA_PD, struct.pack("!III", self.iaid, 0, 0) + prefix_opts)


def summary(kind: str, raw: bytes, opts: list[tuple[int, bytes]]) -> dict[str, Any]:
    by_code: dict[str, list[str]] = {}
    for code, body in opts:
        by_code.setdefault(str(code), []).append(body.hex())
    prefixes = [p for code, body in opts if code == OPT_IA_PD for p in ia_pd_prefixes(body)]
    mape = [opt(code, body).hex() for code, body in opts if code == OPT_MAPE]
    return {"type": kind, "raw": raw.hex(), "options": by_code, "prefixes": prefixes, "option94": mape}


def run(iface: str, oro94: bool = True, then: str | None = None, timeout: float = 1.0) -> dict[str, Any]:
    c = Client(iface, [OPT_MAPE] if oro94 else [], timeout)
    adv_raw, adv = c.exchange(SOLICIT, c.ia_pd(), ADVERTISE)
    server_id = next(b for code, b in adv if code == OPT_SERVERID)
    ia = next((b for code, b in adv if code == OPT_IA_PD), None)
    extra = opt(OPT_SERVERID, server_id) + (opt(OPT_IA_PD, ia) if ia else c.ia_pd())
    rep_raw, rep = c.exchange(REQUEST, extra, REPLY)
    out = {"advertise": summary("advertise", adv_raw, adv), "reply": summary("reply", rep_raw, rep)}
    if then in ("renew", "rebind"):
        ia = next((b for code, b in rep if code == OPT_IA_PD), None)
        extra = opt(OPT_IA_PD, ia) if ia else c.ia_pd()
        if then == "renew":
            extra = opt(OPT_SERVERID, server_id) + extra
        raw, r = c.exchange(RENEW if then == "renew" else REBIND, extra, REPLY)
        out[then] = summary(then, raw, r)
    return out


def rebind(iface: str, prefix: str, oro94: bool = True, timeout: float = 1.0) -> dict[str, Any]:
    """A REBIND for ``prefix`` alone (what a CE sends at T2): the server answers with the lease it now holds."""
    c = Client(iface, [OPT_MAPE] if oro94 else [], timeout)
    net = IPv6Network(prefix)
    iaprefix = opt(OPT_IAPREFIX, struct.pack("!IIB", 0, 0, net.prefixlen) + net.network_address.packed)
    raw, r = c.exchange(REBIND, c.ia_pd(iaprefix), REPLY)
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
    except (OSError, StopIteration) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "iface": a.iface}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
