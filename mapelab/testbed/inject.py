"""Send hand-made MAP-E packets from wherever this runs: the e2e suite's spoofing customer.

``python -m mapelab.testbed.inject --src MAP --dst BR --inner-src A.B.C.D --inner-dst E.F.G.H
--sport N [--dport 7] [--count K]`` encapsulates a UDP datagram in IPv6 (protocol 4, no
encapsulation limit) and sends it from ``--src``.  The suite runs it on the testbed's
access-network host (``Testbed.inject``), where ``--src`` may be an address the host does not
own (``ip_nonlocal_bind``): it plays a customer that lies about its port or address — what a
BR's anti-spoofing check (RFC 7597 §8.1) must drop and count — without anything installed on
the CE under test.  Depends only on ``mapelab.netio``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
from ipaddress import IPv4Address, IPv6Address

from mapelab.netio.ip6ip4 import Ip6Ip4Socket
from mapelab.netio.packets import build_ipv4, checksum


def udp_packet(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, length, csum) + payload
    return build_ipv4(src.packed, dst.packed, socket.IPPROTO_UDP, udp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="send a hand-made IPv4-in-IPv6 (MAP-E) UDP packet")
    ap.add_argument("--src", type=IPv6Address, required=True, help="outer source (the CE's MAP address)")
    ap.add_argument("--dst", type=IPv6Address, required=True, help="outer destination (the BR)")
    ap.add_argument("--inner-src", type=IPv4Address, required=True)
    ap.add_argument("--inner-dst", type=IPv4Address, required=True)
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--dport", type=int, default=7)
    ap.add_argument("--count", type=int, default=1)
    a = ap.parse_args(argv)
    if not 0 < a.sport < 65536 or not 0 < a.dport < 65536 or not 0 < a.count <= 1000:
        ap.error("ports must be 1..65535 and --count 1..1000")
    packet = udp_packet(a.inner_src, a.inner_dst, a.sport, a.dport, b"mapelab spoof test")
    with Ip6Ip4Socket() as sock:
        for _ in range(a.count):
            sock.send(packet, a.src, a.dst)
    print(f"sent {a.count} packet(s) {a.inner_src}:{a.sport} -> {a.inner_dst}:{a.dport} from {a.src} to {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
