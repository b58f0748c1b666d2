"""The BR process end to end with hand-built packets: the test plays both CEs of the cosmote-like
scenario (198.51.100.1 shared, PSIDs 2 and 3) and the IPv4 internet, in namespaces of its own.

Acceptance of issue 3, item 4: correct traffic is forwarded and its reply returns encapsulated to
the right MAP address; spoofed traffic is dropped and counted; hairpinning; a fragment train whose
first fragment arrives last; ICMP errors routed by their quoted header; a flow log.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet import fragment as scapy_fragment

from tests.testbed.br_fixture import (
    INET_ADDR,
    BrTopology,
    ce_socket,
    drain,
    receive,
    socket_in,
)

SHARED = "198.51.100.1"
CE1_PORT, CE2_PORT = 1056, 1072  # first ports of PSID 2 and PSID 3 (offset 6, k 6)


@pytest.fixture(scope="module")
def ces(topo: BrTopology) -> Iterator[list[Any]]:
    socks = [ce_socket(topo, 0), ce_socket(topo, 1)]
    yield socks
    for s in socks:
        s.close()


@pytest.fixture()
def clean(ces: list[Any]) -> list[Any]:
    for s in ces:
        drain(s)
    return ces


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"ping", **ip: Any) -> bytes:
    return bytes(IP(src=src, dst=dst, **ip) / UDP(sport=sport, dport=dport) / payload)


def test_sanity_map_addresses(topo: BrTopology) -> None:
    assert topo.map_addresses == [
        IPv6Address("2001:db8:6200:4200:0:c633:6401:2"),
        IPv6Address("2001:db8:6200:4300:0:c633:6401:3"),
    ]


def test_udp_reaches_internet_and_reply_returns_to_the_right_ce(topo: BrTopology, clean: list[Any]) -> None:
    ce1, ce2 = clean
    srv = socket_in(topo.inet, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((str(INET_ADDR), 7))
    try:
        for i, (ce, port) in enumerate(((ce1, CE1_PORT), (ce2, CE2_PORT))):
            ce.send(udp(SHARED, port, str(INET_ADDR), 7, b"hello%d" % i), topo.map_addresses[i], topo.scenario.br)
            data, peer = srv.recvfrom(100)
            assert (data, peer) == (b"hello%d" % i, (SHARED, port))
            srv.sendto(b"reply%d" % i, peer)
        for i, ce in enumerate((ce1, ce2)):
            got = receive(ce, match=lambda x: IP(x[0]).haslayer(UDP))
            assert got, f"no reply reached CE{i + 1}"
            inner, osrc, odst = got[0]
            assert (osrc, odst) == (topo.scenario.br, topo.map_addresses[i])
            pkt = IP(inner)
            assert (pkt.src, pkt.dst, pkt[UDP].dport, bytes(pkt[UDP].payload)) == (
                str(INET_ADDR), SHARED, (CE1_PORT, CE2_PORT)[i], b"reply%d" % i)
        # nothing crossed over: each CE got exactly its own reply
        assert not receive(ce1, timeout=0.2) and not receive(ce2, timeout=0.2)
    finally:
        srv.close()
    c = topo.wait_counters(lambda c: c["tunnel_out_packets"] >= 2)
    assert c["ipv4_out_packets"] >= 2 and c["tunnel_out_packets"] >= 2 and c["drops_total"] == 0


def test_icmp_echo_id_selects_the_ce(topo: BrTopology, clean: list[Any]) -> None:
    ce1, ce2 = clean
    ident = CE2_PORT + 3
    echo = bytes(IP(src=SHARED, dst=str(INET_ADDR)) / ICMP(type=8, id=ident, seq=7) / b"abc")
    ce2.send(echo, topo.map_addresses[1], topo.scenario.br)
    got = receive(ce2, match=lambda x: IP(x[0]).haslayer(ICMP) and IP(x[0])[ICMP].type == 0)
    assert got and IP(got[0][0])[ICMP].id == ident and got[0][2] == topo.map_addresses[1]
    assert not receive(ce1, timeout=0.2)


def test_tcp_syn_ack_returns(topo: BrTopology, clean: list[Any]) -> None:
    ce1, _ = clean
    lst = socket_in(topo.inet, socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((str(INET_ADDR), 8080))
    lst.listen()
    try:
        syn = bytes(IP(src=SHARED, dst=str(INET_ADDR)) / TCP(sport=CE1_PORT + 1, dport=8080, flags="S", seq=1000))
        ce1.send(syn, topo.map_addresses[0], topo.scenario.br)
        got = receive(ce1, match=lambda x: IP(x[0]).haslayer(TCP))
        assert got, "no SYN-ACK"
        seg = IP(got[0][0])[TCP]
        assert seg.flags == "SA" and seg.ack == 1001 and seg.dport == CE1_PORT + 1
    finally:
        lst.close()


def test_antispoofing_drops_and_counts(topo: BrTopology, clean: list[Any]) -> None:
    ce1, _ = clean
    before = topo.counters()["drops"]
    srv = socket_in(topo.inet, socket.AF_INET, socket.SOCK_DGRAM, timeout=0.5)
    srv.bind((str(INET_ADDR), 9999))
    try:
        br, me = topo.scenario.br, topo.map_addresses[0]
        # CE1 (PSID 2) using a port of PSID 3
        ce1.send(udp(SHARED, CE2_PORT, str(INET_ADDR), 9999, b"spoof-port"), me, br)
        # the right port, the wrong IPv4 address for this MAP address
        ce1.send(udp("198.51.100.2", CE1_PORT, str(INET_ADDR), 9999, b"spoof-addr"), me, br)
        # an outer source no rule covers (the CE's link address)
        ce1.send(udp(SHARED, CE1_PORT, str(INET_ADDR), 9999, b"no-rule"), IPv6Address("fd00:0:0:1::2"), br)
        # a system port (0-1023 belong to nobody with offset 6)
        ce1.send(udp(SHARED, 80, str(INET_ADDR), 9999, b"sysport"), me, br)
        # sent to an address of the ISP node that is not a BR address
        ce1.send(udp(SHARED, CE1_PORT, str(INET_ADDR), 9999, b"not-br"), me, IPv6Address("fd00:0:0:1::1"))
        with pytest.raises(TimeoutError):
            srv.recvfrom(100)
    finally:
        srv.close()

    def grew(c: dict[str, Any]) -> bool:
        d = c["drops"]
        return all(d.get(k, 0) - before.get(k, 0) >= n for k, n in
                   {"port-outside-set": 2, "address-mismatch": 1, "no-rule": 1, "not-br-address": 1}.items())

    c = topo.wait_counters(grew)
    assert grew(c), c["drops"]
    flows = topo.flows()
    assert any(f["verdict"] == "port-outside-set" and f["sport"] == CE2_PORT for f in flows)
    assert any(f["verdict"] == "address-mismatch" and f["src"] == "198.51.100.2" for f in flows)


def test_hairpin_between_ces(topo: BrTopology, clean: list[Any]) -> None:
    ce1, ce2 = clean
    before = topo.counters()["hairpin"]
    ce1.send(udp(SHARED, CE1_PORT + 2, SHARED, CE2_PORT + 2, b"to-ce2"), topo.map_addresses[0], topo.scenario.br)
    got = receive(ce2, match=lambda x: IP(x[0]).haslayer(UDP))
    assert got, "hairpinned packet did not reach CE2"
    inner, osrc, odst = got[0]
    assert (osrc, odst) == (topo.scenario.br, topo.map_addresses[1])
    pkt = IP(inner)
    assert (pkt[UDP].sport, pkt[UDP].dport, bytes(pkt[UDP].payload)) == (CE1_PORT + 2, CE2_PORT + 2, b"to-ce2")
    assert not receive(ce1, timeout=0.2)
    # and back
    ce2.send(udp(SHARED, CE2_PORT + 2, SHARED, CE1_PORT + 2, b"to-ce1"), topo.map_addresses[1], topo.scenario.br)
    back = receive(ce1, match=lambda x: IP(x[0]).haslayer(UDP))
    assert back and back[0][2] == topo.map_addresses[0]
    c = topo.wait_counters(lambda c: c["hairpin"] >= before + 2)
    assert c["hairpin"] >= before + 2
    assert any(f["direction"] == "hairpin" and f["ce"] == str(topo.map_addresses[1]) for f in topo.flows())


def _reassemble(frags: list[bytes]) -> bytes:
    parts = sorted((IP(f) for f in frags), key=lambda p: p.frag)
    return b"".join(bytes(p.payload) for p in parts)


def test_inbound_fragment_train_first_fragment_last(topo: BrTopology, clean: list[Any]) -> None:
    ce1, ce2 = clean
    before = topo.counters()
    whole = IP(src=str(INET_ADDR), dst=SHARED, id=31337) / UDP(sport=53, dport=CE2_PORT + 5) / (b"F" * 2500)
    frags = [bytes(f) for f in scapy_fragment(whole, fragsize=1000)]
    assert len(frags) == 3
    raw = socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for f in (frags[1], frags[2], frags[0]):  # the first fragment arrives last
            raw.sendto(f, (SHARED, 0))
            time.sleep(0.05)
    finally:
        raw.close()
    got = receive(ce2, want=3, match=lambda x: IP(x[0]).id == 31337)
    assert len(got) == 3, f"CE2 got {len(got)} of 3 fragments"
    assert all(g[2] == topo.map_addresses[1] for g in got)
    assert _reassemble([g[0] for g in got]) == bytes(whole[UDP])
    assert not receive(ce1, timeout=0.2, match=lambda x: IP(x[0]).id == 31337)
    c = topo.wait_counters(lambda c: c["fragments_released"] >= before["fragments_released"] + 2)
    assert c["fragments_held"] >= before["fragments_held"] + 2
    assert c["fragments_released"] >= before["fragments_released"] + 2


def test_outbound_fragment_train_first_fragment_last(topo: BrTopology, clean: list[Any]) -> None:
    ce1, _ = clean
    srv = socket_in(topo.inet, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((str(INET_ADDR), 5353))
    try:
        whole = IP(src=SHARED, dst=str(INET_ADDR), id=4711) / UDP(sport=CE1_PORT + 7, dport=5353) / (b"O" * 2500)
        frags = [bytes(f) for f in scapy_fragment(whole, fragsize=1000)]
        for f in (frags[2], frags[1], frags[0]):
            ce1.send(f, topo.map_addresses[0], topo.scenario.br)
        data, peer = srv.recvfrom(4000)
        assert data == b"O" * 2500 and peer == (SHARED, CE1_PORT + 7)
        # the same train from a port outside the set is dropped whole
        bad = IP(src=SHARED, dst=str(INET_ADDR), id=4712) / UDP(sport=CE2_PORT, dport=5353) / (b"B" * 2500)
        for f in reversed([bytes(f) for f in scapy_fragment(bad, fragsize=1000)]):
            ce1.send(f, topo.map_addresses[0], topo.scenario.br)
        srv.settimeout(0.5)
        with pytest.raises(TimeoutError):
            srv.recvfrom(4000)
    finally:
        srv.close()


def test_icmp_error_reaches_the_right_ce(topo: BrTopology, clean: list[Any]) -> None:
    ce1, ce2 = clean
    before = topo.counters()["icmp_errors_routed"]
    # UDP to a closed port of the internet node: its kernel answers "port unreachable"
    ce2.send(udp(SHARED, CE2_PORT + 9, str(INET_ADDR), 9, b"closed"), topo.map_addresses[1], topo.scenario.br)
    got = receive(ce2, match=lambda x: IP(x[0]).haslayer(ICMP) and IP(x[0])[ICMP].type == 3)
    assert got, "the ICMP error did not reach CE2"
    err = IP(got[0][0])
    assert err[ICMP].code == 3 and err[UDPerror].sport == CE2_PORT + 9 and got[0][2] == topo.map_addresses[1]
    assert not receive(ce1, timeout=0.2)
    # a hand-made error quoting CE1's flow goes to CE1
    raw = socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        fake = IP(src=str(INET_ADDR), dst=SHARED) / ICMP(type=11, code=0) / IPerror(
            src=SHARED, dst="203.0.113.50") / UDPerror(sport=CE1_PORT + 3, dport=33434)
        raw.sendto(bytes(fake), (SHARED, 0))
    finally:
        raw.close()
    got1 = receive(ce1, match=lambda x: IP(x[0]).haslayer(ICMP) and IP(x[0])[ICMP].type == 11)
    assert got1 and got1[0][2] == topo.map_addresses[0]
    assert not receive(ce2, timeout=0.2)
    c = topo.wait_counters(lambda c: c["icmp_errors_routed"] >= before + 2)
    assert c["icmp_errors_routed"] >= before + 2


def test_unowned_destination_is_dropped(topo: BrTopology, clean: list[Any]) -> None:
    before = topo.counters()["drops"].get("no-ce", 0)
    raw = socket_in(topo.inet, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:  # port 80 belongs to no PSID (offset 6 keeps 0-1023 out of every set)
        raw.sendto(udp(str(INET_ADDR), 53, SHARED, 80), (SHARED, 0))
    finally:
        raw.close()
    c = topo.wait_counters(lambda c: c["drops"].get("no-ce", 0) > before)
    assert c["drops"].get("no-ce", 0) > before
    assert not receive(clean[0], timeout=0.2) and not receive(clean[1], timeout=0.2)


def test_flow_log_records_new_flows(topo: BrTopology) -> None:
    time.sleep(0.6)
    flows = topo.flows()
    assert flows, "empty flow log"
    keys = {"direction", "proto", "src", "dst", "ce", "verdict"}
    assert all(keys <= f.keys() for f in flows)
    out = [f for f in flows if f["direction"] == "outbound" and f["verdict"] == "forwarded" and f["proto"] == "udp"]
    assert any(f["sport"] == CE1_PORT and f["ce"] == str(topo.map_addresses[0]) for f in out)
    assert any(f["direction"] == "inbound" and f["proto"] == "icmp" and f["id"] == CE2_PORT + 3 for f in flows)


def test_time_exceeded_from_the_isp_kernel_returns_through_the_br(topo: BrTopology, clean: list[Any]) -> None:
    """Traceroute's first hop: the ISP node's kernel drops a TTL-1 packet the BR decapsulated and
    its ICMP error comes back through the TUN, routed to the sender by the quoted header."""
    ce1, ce2 = clean
    ce1.send(udp(SHARED, CE1_PORT + 11, str(INET_ADDR), 33434, b"trace", ttl=1), topo.map_addresses[0],
             topo.scenario.br)
    got = receive(ce1, match=lambda x: IP(x[0]).haslayer(ICMP) and IP(x[0])[ICMP].type == 11)
    assert got and got[0][2] == topo.map_addresses[0]
    assert IP(got[0][0])[UDPerror].sport == CE1_PORT + 11
    assert not receive(ce2, timeout=0.2)
