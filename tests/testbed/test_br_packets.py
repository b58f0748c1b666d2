"""mapelab.netio.packets against scapy: the BR's struct parser and builders must agree with a
real packet library on every field the forwarding decisions use (no root needed)."""

from __future__ import annotations

import contextlib
import random
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet import fragment as scapy_fragment

from mapelab.netio.packets import (
    Malformed,
    build_ipv4,
    checksum,
    fragment,
    icmp_frag_needed,
    icmpv6_ptb_mtu,
    parse,
)

A = "198.51.100.1"
B = "198.18.0.2"


def test_udp_tcp_ports_and_flags() -> None:
    p = parse(bytes(IP(src=A, dst=B, id=77, flags="DF") / UDP(sport=1056, dport=53) / b"x"))
    assert (p.sport, p.dport, p.proto, p.ident, p.df, p.is_fragment) == (1056, 53, 17, 77, True, False)
    assert socket.inet_ntoa(p.src) == A and socket.inet_ntoa(p.dst) == B
    p = parse(bytes(IP(src=A, dst=B) / TCP(sport=2080, dport=80, flags="S")))
    assert (p.sport, p.dport, p.proto) == (2080, 80, 6)


def test_icmp_echo_id_is_the_port() -> None:
    p = parse(bytes(IP(src=A, dst=B) / ICMP(type=8, id=1060, seq=1)))
    assert (p.sport, p.dport, p.icmp_type, p.embedded) == (1060, 1060, 8, None)


def test_icmp_error_ports_come_from_the_quote_seen_from_the_sender() -> None:
    # The internet answers a CE's UDP 198.51.100.1:1072 -> 198.18.0.2:9 with port unreachable.
    err = IP(src=B, dst=A) / ICMP(type=3, code=3) / IPerror(src=A, dst=B) / UDPerror(sport=1072, dport=9)
    p = parse(bytes(err))
    assert p.is_icmp_error and p.dport == 1072 and p.sport == 9  # dport picks the CE
    assert p.embedded is not None and p.embedded[0] == 17
    q = parse(bytes(IP(src=B, dst=A) / ICMP(type=11) / IPerror(src=A, dst=B) / ICMP(type=8, id=1061)))
    assert q.dport == 1061


def test_fragments_have_no_ports_after_the_first() -> None:
    frags = scapy_fragment(IP(src=B, dst=A, id=999) / UDP(sport=53, dport=1072) / (b"z" * 3000), fragsize=1000)
    parsed = [parse(bytes(f)) for f in frags]
    assert parsed[0].dport == 1072 and parsed[0].mf and parsed[0].offset == 0
    assert all(x.dport is None and x.offset > 0 for x in parsed[1:])
    assert not parsed[-1].mf


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "short"),
        (b"\x45" + b"\0" * 10, "short"),
        (b"\x65" + b"\0" * 19, "not-ipv4"),
        (bytes(IP(src=A, dst=B) / UDP())[:25], "bad-length"),
        (bytes(IP(src=A, dst=B, proto=17, ihl=5, len=22)), "bad-length"),
    ],
)
def test_malformed_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as e:
        parse(data)
    assert e.value.args[0] == reason


def test_bad_header_checksum_and_short_transport() -> None:
    good = bytearray(bytes(IP(src=A, dst=B) / UDP(sport=1, dport=2)))
    good[10] ^= 0xFF
    with pytest.raises(Malformed, match="bad-checksum"):
        parse(bytes(good))
    with pytest.raises(Malformed, match="short-transport"):
        parse(build_ipv4(socket.inet_aton(A), socket.inet_aton(B), 17, b"\x01\x02"))


def test_random_bytes_never_raise_anything_but_malformed() -> None:
    rnd = random.Random(7)
    base = bytes(IP(src=B, dst=A) / ICMP(type=3, code=4) / IPerror(src=A, dst=B) / UDPerror(sport=1, dport=2))
    for _ in range(5000):
        if rnd.random() < 0.5:
            data = rnd.randbytes(rnd.randrange(0, 80))
        else:
            data = bytearray(base)
            for _ in range(rnd.randrange(1, 6)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            data = bytes(data[: rnd.randrange(len(data) + 1)])
        with contextlib.suppress(Malformed):
            parse(data, verify_checksum=rnd.random() < 0.5)


def test_build_and_checksum_match_scapy() -> None:
    pkt = build_ipv4(socket.inet_aton(A), socket.inet_aton(B), 17, b"\0\1\0\2\0\x0a\0\0hi", ident=5, df=True)
    s = IP(pkt)
    del s.chksum
    assert bytes(IP(bytes(s))) == pkt
    assert checksum(pkt[:20]) == 0


def test_fragment_reassembles_and_respects_mtu() -> None:
    orig = bytes(IP(src=B, dst=A, id=4242) / UDP(sport=53, dport=1072) / (bytes(range(256)) * 6))
    pieces = fragment(orig, 600)
    assert len(pieces) > 1 and all(len(x) <= 600 for x in pieces)
    parsed = [parse(x) for x in pieces]
    assert all(x.ident == 4242 for x in parsed) and not parsed[-1].mf and all(x.mf for x in parsed[:-1])
    payload = b"".join(x[20:] for x in pieces)
    assert payload == orig[20:]
    # a fragment of a fragment keeps its place in the original datagram
    first = bytes(scapy_fragment(IP(orig), fragsize=1200)[0])
    sub = fragment(first, 500)
    assert parse(sub[-1]).mf and parse(sub[1]).offset == parse(sub[0]).total - 20


def test_icmp_frag_needed_shape() -> None:
    orig = bytes(IP(src=B, dst=A, flags="DF") / UDP(sport=53, dport=1072) / (b"q" * 1400))
    icmp = IP(icmp_frag_needed(orig, 1452, socket.inet_aton("192.0.0.1")))
    assert icmp.dst == B and icmp.src == "192.0.0.1" and icmp.proto == 1
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 4 and icmp[ICMP].nexthopmtu == 1452
    assert len(bytes(icmp)) <= 576
    chk = icmp[ICMP].chksum
    del icmp[ICMP].chksum
    assert IP(bytes(icmp))[ICMP].chksum == chk
    assert icmp[IPerror].src == B and icmp[UDPerror].dport == 1072


def test_ptb_parser() -> None:
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

    msg = bytes(ICMPv6PacketTooBig(mtu=1300) / IPv6(src="2001:db8:ffff::1", dst="2001:db8::2", nh=4))
    mtu, _src, dst = icmpv6_ptb_mtu(msg)  # type: ignore[misc]
    assert mtu == 1300 and socket.inet_ntop(socket.AF_INET6, dst) == "2001:db8::2"
    assert icmpv6_ptb_mtu(b"\x01" + msg[1:]) is None
