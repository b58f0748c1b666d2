"""RFC 7598 codec: exact bytes, strictness with offsets, the unknown-sub-option decision, fuzzing."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapelab.mape import (
    BorderRelay,
    CodecError,
    Container,
    DefaultMappingRule,
    PortParams,
    Rule,
    UnknownOption,
    V4V6Bind,
    decode_container,
    decode_option94,
    encode_container,
    encode_option,
    mape_container,
    mape_containers,
    validate_container,
)
from mapelab.mape.codec import decode_portparams, decode_rule, encode_portparams, encode_rule

DATA = Path(__file__).parent / "data"
BR = IPv6Address("2001:db8:ffff::1")
EX1 = Rule(IPv6Network("2001:db8::/40"), IPv4Network("192.0.2.0/24"), 16, PortParams(6, 0, 0))
# Built by hand from RFC 7598 §4.1/4.2/4.5 for Example 1 with portparams "6, 0/0" and one BR.
EX1_HEX = (
    "005e002d"  # OPTION_S46_CONT_MAPE, 45 bytes
    "00590015" "00" "10" "18" "c0000200" "28" "20010db800"  # RULE: flags 0, ea 16, /24, 192.0.2.0, /40 in 5 bytes
    "005d0004" "06" "00" "0000"  # PORTPARAMS: offset 6, PSID length 0
    "005a0010" "20010db8ffff00000000000000000001"  # BR
)


def test_example1_bytes_by_hand() -> None:
    assert encode_container(mape_container([EX1], [BR])).hex() == EX1_HEX
    c = decode_container(bytes.fromhex(EX1_HEX))
    assert c.rules == (EX1,) and c.brs == (BR,)


def test_kea_wire_bytes_for_example1() -> None:
    """What Kea 2.2 really sent for scenarios/rfc7597-example1.toml (captured by the testbed tests)."""
    path = DATA / "kea22-example1-option94.hex"
    if not path.exists():
        pytest.fail(f"{path} is missing: regenerate it with the testbed's Kea capture test")
    raw = bytes.fromhex(path.read_text().strip())
    c = decode_option94(raw)
    validate_container(c)
    assert c.rules == (EX1,) and c.brs == (BR,)
    assert encode_container(c) == raw
    body = raw[4:]
    assert encode_container(decode_option94(body)) == raw  # the body alone decodes the same


def test_truncated_prefixes_and_padding() -> None:
    for plen, nbytes in [(0, 0), (1, 1), (8, 1), (9, 2), (40, 5), (42, 6), (64, 8), (128, 16)]:
        prefix = IPv6Network((int(IPv6Address("2001:db8:6200::")) >> (128 - plen) << (128 - plen), plen))
        r = Rule(prefix, IPv4Network("198.51.100.0/24"), 0)
        wire = encode_rule(r)
        assert len(wire) == 4 + 8 + nbytes
        assert decode_rule(wire[4:]) == r
    # 2001:db8:6200::/42 → 6 bytes, last one 0x00; a set padding bit is an error at that byte
    body = bytearray(encode_rule(Rule(IPv6Network("2001:db8:6200::/42"), IPv4Network("198.51.100.0/24"), 14))[4:])
    body[-1] |= 0x01
    with pytest.raises(CodecError) as e:
        decode_rule(bytes(body), base=100)
    assert e.value.offset == 108 and "padding" in e.value.reason


def test_psid_left_aligned_and_f_flag_lsb() -> None:
    assert encode_portparams(PortParams(6, 8, 0x34))[4:].hex() == "06083400"
    assert encode_portparams(PortParams(2, 12, 0x342))[4:].hex() == "020c3420"
    assert decode_portparams(bytes.fromhex("06083400")) == PortParams(6, 8, 0x34)
    with pytest.raises(CodecError, match="bits after the first 8"):
        decode_portparams(bytes.fromhex("06083401"))
    assert decode_portparams(bytes.fromhex("0600ffff")) == PortParams(6, 0, 0)  # ignored when k = 0
    f = Rule(EX1.ipv6_prefix, EX1.ipv4_prefix, 16, forwarding=True)
    assert encode_rule(f)[4] == 0x01
    kea_f = decode_rule(bytes.fromhex("80101 8c000020028 20010db800".replace(" ", "")))
    assert not kea_f.forwarding and kea_f.reserved_flags == 0x40  # Kea's documented 128 is not F
    assert encode_rule(kea_f)[4] == 0x80


def test_several_rules_brs_and_containers() -> None:
    r2 = Rule(IPv6Network("2001:db8:1200::/40"), IPv4Network("198.51.100.0/24"), 16, forwarding=True)
    br2 = IPv6Address("2001:db8:ffff::2")
    c = Container(94, (BorderRelay(BR), EX1, r2, BorderRelay(br2)))
    wire = encode_container(c)
    back = decode_container(wire)
    assert back.options == c.options and back.rules == (EX1, r2) and back.brs == (BR, br2)
    other = encode_option(23, b"\x20" * 16)  # a DNS server option before the containers
    lw = Container(96, (BorderRelay(br2), V4V6Bind(IPv4Address("192.0.2.1"), IPv6Network("2001:db8:1::/48"),
                                                   PortParams(6, 4, 3))))
    t = Container(95, (EX1, DefaultMappingRule(IPv6Network("64:ff9b::/96"))))
    msg = other + wire + encode_container(lw) + encode_container(t) + encode_container(mape_container([EX1], [BR]))
    good, bad = mape_containers(msg)
    assert [g.rules for g in good] == [(EX1, r2), (EX1,)] and bad == []
    for cont in (lw, t):
        validate_container(cont)
        assert decode_container(encode_container(cont)).options == cont.options


def test_unknown_suboption_discards_the_container() -> None:
    """Decision (RFC 7598 §5 SHOULD): a container with an unsupported sub-option is discarded whole."""
    with_unknown = Container(94, (EX1, BorderRelay(BR), UnknownOption(111, b"\x01")))
    wire = encode_container(with_unknown)
    decoded = decode_container(wire)
    assert decoded.unknown == (UnknownOption(111, b"\x01", offset=4 + len(encode_rule(EX1)) + 20),)
    assert encode_container(decoded) == wire  # decoding alone keeps it for display
    with pytest.raises(CodecError, match="unsupported sub-option 111"):
        validate_container(decoded)
    good, bad = mape_containers(wire + encode_container(mape_container([EX1], [BR])))
    assert len(good) == 1 and len(bad) == 1 and bad[0].offset == decoded.unknown[0].offset


@pytest.mark.parametrize(
    ("hexbytes", "offset", "reason"),
    [
        ("005e", 0, "trailing"),
        ("005e0010" "005a000c", 0, "says length 16"),
        ("005e0008" "005a0004" "20010db8", 8, "must be 16 bytes"),
        ("005e0008" "00590004" "00100018", 8, "at least 8 bytes"),
        ("005e000c" "00590008" "00311800c0000200", 9, "ea-len 49"),
        ("005e000c" "00590008" "001021c0000200ff", 10, "prefix4-len 33"),
        ("005e000c" "00590008" "0010180000000081", 15, "prefix6-len 129"),
        ("005e000c" "00590008" "0010180000000028", 16, "needs 5 byte(s), 0 present"),
        ("005e0015" "00590011" "0010180000000000" "005d0005" "0600000000", 20, "must be 4 bytes"),
        ("005e0014" "00590010" "0010180000000000" "005d0004" "10000000", 20, "offset 16 > 15"),
        ("005e0014" "00590010" "0010180000000000" "005d0004" "060b0000", 21, "PSID offset 6 + PSID length 11"),
        ("005e0014" "00590010" "0010180000000000" "00170004" "00000000", 16, "sub-option 23 is not allowed"),
    ],
)
def test_strict_errors_carry_offset_and_reason(hexbytes: str, offset: int, reason: str) -> None:
    with pytest.raises(CodecError) as e:
        decode_container(bytes.fromhex(hexbytes))
    assert e.value.offset == offset, e.value
    assert reason in e.value.reason


@pytest.mark.parametrize(
    ("opts", "reason"),
    [((EX1,), "without OPTION_S46_BR"), ((BorderRelay(BR),), "without OPTION_S46_RULE")],
)
def test_mape_container_needs_rule_and_br(opts: tuple, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        validate_container(decode_container(encode_container(Container(94, opts))))


def test_reserved_ipv4_bits_are_ignored() -> None:
    r = decode_rule(bytes.fromhex("001018c00002ff2820010db800"))
    assert r.ipv4_prefix == IPv4Network("192.0.2.0/24")


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_yield_a_value_or_codec_error(data: bytes) -> None:
    for fn in (decode_option94, lambda d: mape_containers(d)):
        with contextlib.suppress(CodecError):
            fn(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=60), st.sampled_from([89, 90, 93]))
def test_random_suboption_bodies(body: bytes, code: int) -> None:
    wire = encode_option(94, encode_option(code, body))
    try:
        c = decode_container(wire)
    except CodecError:
        return
    assert encode_container(c) == wire or code == 89  # rules may mask reserved IPv4 bits / ignored PSID
