"""A stand-in BR + IPv4 server for testing the reference CE on its own (not the testbed's BR).

Run in the ISP namespace: ``python ce_minibr.py --log FILE``.  Every IPv4-in-IPv6 packet that
arrives is recorded as one JSON line (outer source/destination, inner source, protocol, MAP port);
UDP datagrams and ICMP echo requests are answered as if the internet host had echoed them, and
sent back encapsulated from the packet's outer destination (the BR address) to its outer source
(the CE's MAP address).  Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mapelab.netio import Ip6Ip4Socket
from mapelab.netio.packets import Malformed, build_ipv4, checksum, parse


def udp_reply(pkt: bytes, hlen: int, src: bytes, dst: bytes) -> bytes:
    sport, dport, _len, _ck = struct.unpack_from("!HHHH", pkt, hlen)
    data = pkt[hlen + 8 :]
    udp = struct.pack("!HHHH", dport, sport, 8 + len(data), 0) + data  # checksum 0: allowed for UDP/IPv4
    return build_ipv4(dst, src, 17, udp)


def echo_reply(pkt: bytes, hlen: int, src: bytes, dst: bytes) -> bytes:
    icmp = bytearray(pkt[hlen:])
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    struct.pack_into("!H", icmp, 2, checksum(icmp))
    return build_ipv4(dst, src, 1, bytes(icmp))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True, type=Path)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = Ip6Ip4Socket()
    with a.log.open("a") as log:
        while True:
            inner, osrc, odst = sock.recv_raw()
            try:
                h = parse(inner)
            except Malformed as e:
                log.write(json.dumps({"malformed": str(e)}) + "\n")
                log.flush()
                continue
            rec = {
                "outer_src": socket.inet_ntop(socket.AF_INET6, osrc),
                "outer_dst": socket.inet_ntop(socket.AF_INET6, odst) if odst else "",
                "src": socket.inet_ntoa(h.src),
                "dst": socket.inet_ntoa(h.dst),
                "proto": h.proto,
                "sport": h.sport,
                "icmp_type": h.icmp_type,
                "len": h.total,
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            reply = None
            if h.proto == 17 and not h.is_fragment:
                reply = udp_reply(inner[: h.total], h.hlen, h.src, h.dst)
            elif h.proto == 1 and h.icmp_type == 8:
                reply = echo_reply(inner[: h.total], h.hlen, h.src, h.dst)
            if reply is not None and odst:
                sock.send_raw(reply, odst, osrc)


if __name__ == "__main__":
    sys.exit(main())
