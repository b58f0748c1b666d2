"""The model's decisions and edge cases: port-set shapes, rule selection, errors, explicit PSIDs, long prefixes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from mapelab.mape import MapeParameterError, PortParams, PortSet, Rule, ce_address, derive, tunnel_destination


def rule(v6: str, v4: str, ea: int, pp: PortParams | None = None, **kw) -> Rule:
    return Rule(IPv6Network(v6), IPv4Network(v4), ea, pp, **kw)


# -- port sets -----------------------------------------------------------------------------------


def test_offset_zero_is_one_range_without_port_zero() -> None:
    ps = PortSet(offset=0, psid_len=8, psid=0)
    assert ps.ranges() == [(1, 255)]
    assert 0 not in ps and 1 in ps and 255 in ps and 256 not in ps
    assert len(ps) == 255
    assert PortSet(0, 8, 0x34).ranges() == [(13312, 13567)]


def test_k0_is_unrestricted() -> None:
    ps = PortSet(offset=6, psid_len=0, psid=0)
    assert not ps.restricted and ps.ranges() == [(1, 65535)] and len(ps) == 65535
    assert 80 in ps and 0 not in ps and 65536 not in ps
    assert ps.pf() is None


def test_k_16_minus_a_single_ports() -> None:
    ps = PortSet(offset=6, psid_len=10, psid=210)
    assert ps.m == 0
    assert ps.ranges()[:2] == [(1234, 1234), (2258, 2258)]
    assert len(ps) == 63 and ps.nft_intervals()[0] == "1234"


def test_a0_with_sharing_excludes_system_ports() -> None:
    ps = PortSet(6, 6, 0)
    assert min(ps) == 1024 and 0 not in ps and 15 not in ps


def test_renderings() -> None:
    ps = PortSet(6, 8, 0x34)
    assert ps.pf() == "6/8/52"
    assert ps.nft_intervals()[:2] == ["1232-1235", "2256-2259"]
    assert "63 ranges of 4 ports = 252 usable" in ps.describe()
    assert list(ps)[:5] == [1232, 1233, 1234, 1235, 2256]


@pytest.mark.parametrize(
    ("a", "k", "psid", "text"),
    [
        (0, 6, 0, "1 range of 1024 ports = 1023 usable: 1-1023"),  # port 0 is never used
        (0, 6, 1, "1 range of 1024 ports = 1024 usable: 1024-2047"),
        (6, 10, 210, "63 ranges of 1 port = 63 usable: 1234, 2258, 3282, …, 64722"),
        (0, 16, 5, "1 range of 1 port = 1 usable: 5"),
        (0, 16, 0, "no usable port"),
    ],
)
def test_describe_says_ranges_ports_and_usable_in_plain_grammar(a: int, k: int, psid: int, text: str) -> None:
    assert text in PortSet(a, k, psid).describe()


@pytest.mark.parametrize(
    ("a", "k", "psid", "param"),
    [(16, 0, 0, "psid-offset"), (6, 11, 0, "psid-len"), (6, 6, 64, "psid"), (-1, 0, 0, "psid-offset")],
)
def test_portset_bounds(a: int, k: int, psid: int, param: str) -> None:
    with pytest.raises(MapeParameterError) as e:
        PortSet(a, k, psid)
    assert e.value.parameter == param


# -- impossible parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "param", "allowed"),
    [
        (lambda: rule("2001:db8::/40", "192.0.2.0/24", 49), "ea-len", "0..48"),
        (lambda: rule("2001:db8::/40", "10.0.0.0/8", 41), "ea-len", "0..40"),
        (lambda: rule("2001:db8::/40", "192.0.2.0/24", 24, PortParams(6, 0)), "psid-offset", "0..0"),
        (lambda: rule("2001:db8::/40", "192.0.2.0/24", 19), "ea-len", "0..18 without port parameters"),
        (lambda: PortParams(offset=6, psid_len=11), "psid-len", "0..10"),
        (lambda: PortParams(offset=16), "psid-offset", "0..15"),
        (lambda: rule("2001:db8::/120", "192.0.2.0/24", 16), "ea-len", "0..8"),
    ],
)
def test_impossible_parameters_name_parameter_and_range(make, param: str, allowed: str) -> None:
    with pytest.raises(MapeParameterError) as e:
        make()
    assert e.value.parameter == param
    assert allowed in e.value.allowed
    assert param in str(e.value) and allowed in str(e.value)


def test_delegated_prefix_too_short() -> None:
    r = rule("2001:db8::/40", "192.0.2.0/24", 16)
    with pytest.raises(MapeParameterError) as e:
        derive(r, IPv6Network("2001:db8:12::/48"))
    assert e.value.parameter == "delegated prefix length" and e.value.allowed == "/56 or longer"


def test_no_matching_rule() -> None:
    with pytest.raises(MapeParameterError) as e:
        derive([rule("2001:db8::/40", "192.0.2.0/24", 16)], IPv6Network("2001:db9:12:3400::/56"))
    assert e.value.parameter == "delegated prefix" and "2001:db8::/40" in e.value.allowed
    with pytest.raises(MapeParameterError):
        derive([], IPv6Network("2001:db9:12:3400::/56"))


# -- rule selection, prefixes, explicit PSID -----------------------------------------------------


def test_longest_match_selects_bmr() -> None:
    short = rule("2001:db8::/32", "192.0.2.0/24", 16)
    long_ = rule("2001:db8:1200::/40", "198.51.100.0/24", 16)
    p = derive([short, long_], IPv6Network("2001:db8:1234:5600::/56"))
    assert p.rule is long_ and p.ipv4 == IPv4Address("198.51.100.52") and p.psid == 0x56
    p2 = derive([long_, short], IPv6Network("2001:db8:5555:5500::/56"))
    assert p2.rule is short


def test_two_rules_with_one_ipv6_prefix_first_wins_and_says_so() -> None:
    """RFC 7597 leaves the tie open; off the wire the model takes the container's first rule, in a note."""
    first = rule("2001:db8::/40", "192.0.2.0/24", 16)
    second = rule("2001:db8::/40", "198.51.100.0/24", 16)
    p = derive([first, second], IPv6Network("2001:db8:12:3400::/56"))
    assert p.rule is first and p.ipv4 == IPv4Address("192.0.2.18")
    [note] = p.notes
    assert "share the IPv6 prefix 2001:db8::/40" in note and "198.51.100.0/24" in note and "first" in note
    assert derive([second, first], IPv6Network("2001:db8:12:3400::/56")).rule is second
    assert derive([first, first], IPv6Network("2001:db8:12:3400::/56")).notes == ()  # a repeat is no tie


def test_ipv4_prefix_when_ea_bits_are_few() -> None:
    p = derive(rule("2001:db8::/40", "10.0.0.0/8", 8), IPv6Network("2001:db8:ab::/48"))
    assert p.ipv4_len == 16 and p.ipv4_text == "10.171.0.0/16" and not p.shared
    assert p.map_address == IPv6Address("2001:db8:ab:0:0:aab:0:0")


def test_delegated_prefix_longer_than_64_overwrites_interface_id() -> None:
    r = rule("2001:db8:0:0:1200::/72", "192.0.2.0/24", 16)
    p = derive(r, IPv6Network("2001:db8:0:0:1234:5600::/88"))
    assert p.ipv4 == IPv4Address("192.0.2.52") and p.psid == 0x56
    # iid would be 0000:c000:0234:0056; the /88 prefix keeps its 24 bits over the top of it
    assert p.map_address == IPv6Address("2001:db8:0:0:1234:5600:234:56")


def test_explicit_psid_overrides_ea_psid_and_says_so() -> None:
    r = rule("2001:db8::/40", "192.0.2.0/24", 16, PortParams(6, 8, 0x99))
    p = derive(r, IPv6Network("2001:db8:12:3400::/56"))
    assert p.psid == 0x99 and p.psid_len == 8
    assert p.map_address == IPv6Address("2001:db8:12:3400:0:c000:212:99")
    assert len(p.notes) == 1 and "overrides PSID 52/8" in p.notes[0]


def test_explicit_psid_discarded_for_ipv4_prefix() -> None:
    r = rule("2001:db8::/40", "10.0.0.0/8", 8, PortParams(6, 4, 3))
    p = derive(r, IPv6Network("2001:db8:ab::/48"))
    assert p.psid_len == 0 and not p.port_set.restricted
    assert "discarded" in p.notes[0]


def test_psid_len_zero_takes_k_from_ea_bits() -> None:
    r = rule("2001:db8:6200::/42", "198.51.100.0/24", 14, PortParams(6, 0, 0))
    assert derive(r, IPv6Network("2001:db8:6200:4200::/56")).psid_len == 6


def test_forwarding_rule_sends_to_peer_ce() -> None:
    bmr = rule("2001:db8::/40", "192.0.2.0/24", 16, forwarding=True)
    me = derive([bmr], IPv6Network("2001:db8:12:3400::/56"), IPv6Address("2001:db8:ffff::1"))
    peer = tunnel_destination(me, [bmr], IPv4Address("192.0.2.19"), 1236)
    assert peer == IPv6Address("2001:db8:13:3500:0:c000:213:35")
    assert tunnel_destination(me, [bmr], IPv4Address("203.0.113.1"), 80) == me.br
    no_f = rule("2001:db8::/40", "192.0.2.0/24", 16)
    assert tunnel_destination(me, [no_f], IPv4Address("192.0.2.19"), 1236) == me.br


def test_br_prefix_rule_maps_without_port() -> None:
    r = rule("2001:db8::/40", "10.0.0.0/8", 8)
    assert ce_address(r, IPv4Address("10.171.3.4"), None) == IPv6Address("2001:db8:ab::aab:0:0")
