"""Tunnel MTU handling of the BR (RFC 2473 §7.2, RFC 7597 §8.3): DF packets too big for the tunnel get
ICMPv4 "fragmentation needed" with the tunnel MTU; others are fragmented in IPv4 before
encapsulation; an ICMPv6 Packet Too Big from the path lowers that one CE's MTU.  Also: the outer
header carries no encapsulation-limit option."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

from tests.testbed.br_fixture import (
    INET_ADDR,
    BrTopology,
    ce_socket,
    drain,
    netns,
    receive,
    socket_in,
)

SHARED = "198.51.100.1"
CE1_PORT, CE2_PORT = 1056, 1072
TUNNEL_MTU = 1452  # cosmote-like: WAN 1492 − 40


@pytest.fixture()
def ces(topo: BrTopology) -> Iterator[list[Any]]:
    socks = [ce_socket(topo, 0), ce_socket(topo, 1)]
    for s in socks:
        drain(s)
    yield socks
    for s in socks:
        s.close()


def _inet_send(topo: BrTopology, pkt: bytes) -> None:
    raw = socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.sendto(pkt, (SHARED, 0))
    finally:
        raw.close()


def _icmp_listener(topo: BrTopology) -> Any:
    return socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def _frag_needed(sock: Any, timeout: float = 2.0) -> IP | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(2000)
        except TimeoutError:
            return None
        p = IP(data)
        if p.haslayer(ICMP) and p[ICMP].type == 3 and p[ICMP].code == 4:
            return p
    return None


def big(dport: int, size: int, df: bool, ident: int) -> bytes:
    payload = b"M" * (size - 28)
    return bytes(IP(src=str(INET_ADDR), dst=SHARED, id=ident, flags="DF" if df else 0) / UDP(sport=53, dport=dport)
                 / payload)


def test_df_too_big_gets_frag_needed_with_tunnel_mtu(topo: BrTopology, ces: list[Any]) -> None:
    lis = _icmp_listener(topo)
    try:
        _inet_send(topo, big(CE1_PORT, TUNNEL_MTU + 1, True, 100))
        icmp = _frag_needed(lis)
    finally:
        lis.close()
    assert icmp is not None, "no ICMP fragmentation needed"
    assert icmp[ICMP].nexthopmtu == TUNNEL_MTU and icmp[IPerror].id == 100 and icmp[UDPerror].dport == CE1_PORT
    assert not receive(ces[0], timeout=0.2)
    # exactly the tunnel MTU still fits
    _inet_send(topo, big(CE1_PORT, TUNNEL_MTU, True, 101))
    got = receive(ces[0])
    assert got and len(got[0][0]) == TUNNEL_MTU
    assert topo.wait_counters(lambda c: c["icmp_frag_needed_sent"] >= 1)["icmp_frag_needed_sent"] >= 1


def test_no_df_is_fragmented_before_encapsulation(topo: BrTopology, ces: list[Any]) -> None:
    pkt = big(CE1_PORT, 1480, False, 200)  # the internet link is 1500
    _inet_send(topo, pkt)
    got = receive(ces[0], want=2, match=lambda x: IP(x[0]).id == 200)
    assert len(got) == 2 and all(len(g[0]) <= TUNNEL_MTU for g in got)
    parts = sorted((IP(g[0]) for g in got), key=lambda p: p.frag)
    assert parts[0].flags.MF and not parts[1].flags.MF
    assert b"".join(bytes(p.payload) for p in parts) == pkt[20:]
    c = topo.wait_counters(lambda c: c["fragmented_packets"] >= 1)
    assert c["fragmented_packets"] >= 1 and c["fragments_made"] >= 2


def test_outer_header_has_no_encapsulation_limit(topo: BrTopology, ces: list[Any]) -> None:
    with netns(topo.ces[0]):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x86DD))
        cap.bind(("wan", 0x86DD))
    cap.settimeout(2)
    try:
        _inet_send(topo, big(CE1_PORT + 1, 100, False, 300))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            frame = cap.recv(4000)
            if frame[6] == 4 and frame[40 + 4 : 40 + 6] == struct.pack("!H", 300):
                break
        else:
            pytest.fail("no encapsulated packet captured")
    finally:
        cap.close()
    assert frame[6] == 4, "next header after the IPv6 header must be IPv4 (no destination options)"
    assert struct.unpack("!H", frame[4:6])[0] == len(frame) - 40 == 100


def test_packet_too_big_lowers_only_that_ces_mtu(topo: BrTopology, ces: list[Any]) -> None:
    br, ce1_addr = topo.scenario.br, topo.map_addresses[0]
    ptb = bytes(ICMPv6PacketTooBig(mtu=1300) / IPv6(src=str(br), dst=str(ce1_addr), nh=4, plen=1400)
                / bytes(big(CE1_PORT, 1400, False, 1)[:64]))
    with netns(topo.ces[0]):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:  # the kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets
        s.sendto(ptb, (str(br), 0))
    finally:
        s.close()
    c = topo.wait_counters(lambda c: c["ptb_applied"] >= 1)
    assert c["ptb_applied"] >= 1 and c["ce_mtu"] == {str(ce1_addr): 1260}
    lis = _icmp_listener(topo)
    try:
        _inet_send(topo, big(CE1_PORT, 1400, True, 400))
        icmp = _frag_needed(lis)
        assert icmp is not None and icmp[ICMP].nexthopmtu == 1260
        # CE2 keeps the configured tunnel MTU
        _inet_send(topo, big(CE2_PORT, 1400, True, 401))
        assert receive(ces[1], match=lambda x: IP(x[0]).id == 401)
        assert _frag_needed(lis, timeout=0.3) is None
    finally:
        lis.close()
    # a PTB below the IPv6 minimum is clamped: never below 1280 − 40
    with netns(topo.ces[0]):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.sendto(bytes(ICMPv6PacketTooBig(mtu=600) / IPv6(src=str(br), dst=str(ce1_addr), nh=4)), (str(br), 0))
    finally:
        s.close()
    c = topo.wait_counters(lambda c: c["ptb_received"] >= 2)
    assert c["ce_mtu"] == {str(ce1_addr): 1240}
