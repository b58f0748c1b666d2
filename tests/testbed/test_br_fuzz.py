"""The BR must never die on a bad packet: 10,000 random, truncated and mutated packets through the
tunnel (plus junk from the internet side), then it still forwards, and counted what it dropped."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet import fragment as scapy_fragment

from tests.testbed.br_fixture import INET_ADDR, BrTopology, ce_socket, socket_in

SHARED = "198.51.100.1"
N_TUNNEL = 10_000
N_INET = 2_000


def _seeds() -> list[bytes]:
    dst = str(INET_ADDR)
    base = [
        IP(src=SHARED, dst=dst) / UDP(sport=1056, dport=53) / (b"q" * 30),
        IP(src=SHARED, dst=dst) / TCP(sport=1057, dport=80, flags="S"),
        IP(src=SHARED, dst=dst) / ICMP(type=8, id=1058),
        IP(src=SHARED, dst=dst) / ICMP(type=3, code=3) / IPerror(src=dst, dst=SHARED) / UDPerror(sport=53, dport=1059),
        IP(src=SHARED, dst=SHARED) / UDP(sport=1060, dport=1072) / (b"h" * 10),
        IP(src=SHARED, dst=dst, options=b"\x94\x04\x00\x00") / UDP(sport=1061, dport=53),
    ]
    out = [bytes(p) for p in base]
    out += [bytes(f) for f in scapy_fragment(IP(src=SHARED, dst=dst, id=9) / UDP(sport=1062, dport=9) / (b"f" * 900),
                                             fragsize=256)]
    return out


def _mutants(rnd: random.Random, seeds: list[bytes], n: int) -> Iterator[bytes]:
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.25:
            yield rnd.randbytes(rnd.randrange(0, 1400))
        elif kind < 0.45:
            s = rnd.choice(seeds)
            yield s[: rnd.randrange(0, len(s))]
        elif kind < 0.85:
            s = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randrange(1, 8)):
                s[rnd.randrange(len(s))] = rnd.randrange(256)
            yield bytes(s)
        else:  # well-formed headers, random everything else (ports, flags, offsets, protocols)
            yield bytes(IP(src=SHARED if rnd.random() < 0.7 else f"198.51.100.{rnd.randrange(256)}",
                           dst=rnd.choice([str(INET_ADDR), SHARED, "198.51.100.7"]),
                           id=rnd.randrange(65536), flags=rnd.randrange(8) & 3, frag=rnd.randrange(8192),
                           proto=rnd.choice([1, 6, 17, 47, 132, 255]))
                        / rnd.randbytes(rnd.randrange(0, 200)))


def test_ten_thousand_bad_packets_do_not_kill_it(topo: BrTopology) -> None:
    rnd = random.Random(20261126)
    seeds = _seeds()
    ce = ce_socket(topo, 0)
    br, me = topo.scenario.br, topo.map_addresses[0]
    sent = 0
    try:
        for i, pkt in enumerate(_mutants(rnd, seeds, N_TUNNEL)):
            ce.send(pkt, me, br)
            sent += 1
            if i % 200 == 199:
                time.sleep(0.005)  # stay inside the socket buffers: every packet must be judged
        raw = socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            for i, pkt in enumerate(_mutants(rnd, seeds, N_INET)):
                if len(pkt) < 20:
                    continue
                with contextlib.suppress(OSError):  # the inet kernel refuses some headers outright
                    raw.sendto(pkt, (SHARED, 0))
                if i % 200 == 199:
                    time.sleep(0.005)
        finally:
            raw.close()
        c = topo.wait_counters(lambda c: c["tunnel_in_packets"] >= sent, timeout=10)
        assert topo.br_proc is not None and topo.br_proc.poll() is None, "the BR died"
        assert c["tunnel_in_packets"] >= sent, f"{c['tunnel_in_packets']} of {sent} judged"
        assert c["internal_errors"] == 0, (topo.state_dir / "br.log").read_text()
        assert c["malformed"] > 1000 and c["drops_total"] > 0
        # and it still forwards a good packet
        srv = socket_in(topo.inet, socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind((str(INET_ADDR), 4444))
        try:
            ce.send(bytes(IP(src=SHARED, dst=str(INET_ADDR)) / UDP(sport=1063, dport=4444) / b"alive"), me, br)
            data, peer = srv.recvfrom(100)
            assert (data, peer) == (b"alive", (SHARED, 1063))
        finally:
            srv.close()
    finally:
        ce.close()
    # fragment state stays bounded
    assert c["fragment_cache"]["held"] <= 4096 * 2
