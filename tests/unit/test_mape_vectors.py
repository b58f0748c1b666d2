"""Published vectors: RFC 7597 Appendix A, FreeBSD's pf test, the cosmote-like shape, and every scenario's [expect]."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest

from mapelab import scenario
from mapelab.mape import PortParams, PortSet, Rule, ce_address, derive, source_is_valid

BR = IPv6Address("2001:db8:ffff::1")
EX1_RULE = Rule(IPv6Network("2001:db8::/40"), IPv4Network("192.0.2.0/24"), 16, PortParams(offset=6))
EX1_PREFIX = IPv6Network("2001:db8:12:3400::/56")


def test_rfc7597_example1_ce() -> None:
    p = derive([EX1_RULE], EX1_PREFIX, BR)
    assert p.ipv4 == IPv4Address("192.0.2.18")
    assert (p.psid, p.psid_len, p.port_set.m) == (0x34, 8, 2)
    ranges = p.port_set.ranges()
    assert len(ranges) == 63
    assert ranges[:2] == [(1232, 1235), (2256, 2259)]
    assert ranges[-2:] == [(63696, 63699), (64720, 64723)]
    assert p.map_address == IPv6Address("2001:db8:12:3400:0:c000:212:34")
    assert p.tunnel_endpoints() == (p.map_address, BR)


def test_rfc7597_example2_br() -> None:
    """10.2.3.4:80 → 192.0.2.18:1232 is encapsulated from the BR to the CE's MAP address."""
    assert ce_address(EX1_RULE, IPv4Address("192.0.2.18"), 1232) == IPv6Address("2001:db8:12:3400:0:c000:212:34")
    assert ce_address(EX1_RULE, IPv4Address("192.0.2.18"), 80) is None  # A = 0: nobody owns port 80
    assert ce_address(EX1_RULE, IPv4Address("198.51.100.1"), 1232) is None  # outside the rule


def test_rfc7597_example1_without_portparams_uses_offset_6() -> None:
    rule = Rule(IPv6Network("2001:db8::/40"), IPv4Network("192.0.2.0/24"), 16)
    p = derive(rule, EX1_PREFIX)
    assert (p.psid_offset, p.psid, p.port_set.ranges()[0]) == (6, 0x34, (1232, 1235))


def test_rfc7597_example4_no_sharing() -> None:
    rule = Rule(IPv6Network("2001:db8:12:3400::/56"), IPv4Network("192.0.2.1/32"), 0)
    p = derive(rule, EX1_PREFIX)
    assert p.ipv4 == IPv4Address("192.0.2.1")
    assert not p.shared and not p.port_set.restricted and p.port_set.pf() is None
    assert p.map_address == IPv6Address("2001:db8:12:3400:0:c000:201:0")


def test_rfc7597_example5_explicit_psid() -> None:
    """Erratum 5324: the provisioned PSID is 0x34, giving Example 1's ports."""
    rule = Rule(IPv6Network("2001:db8:12:3400::/56"), IPv4Network("192.0.2.18/32"), 0, PortParams(6, 8, 0x34))
    p = derive(rule, EX1_PREFIX)
    assert p.port_set.ranges() == derive(EX1_RULE, EX1_PREFIX).port_set.ranges()
    assert p.map_address == IPv6Address("2001:db8:12:3400:0:c000:212:34")
    assert p.notes == ()
    # the BR, holding the same rule, maps Example 1's ports back to this CE
    assert ce_address(rule, IPv4Address("192.0.2.18"), 1233) == p.map_address
    assert ce_address(rule, IPv4Address("192.0.2.18"), 1236) is None


def test_freebsd_pf_vector() -> None:
    ps = PortSet(offset=2, psid_len=12, psid=0x342)
    assert ps.ranges() == [(19720, 19723), (36104, 36107), (52488, 52491)]
    assert len(ps) == 12
    assert ps.pf() == "2/12/834"


def test_cosmote_like() -> None:
    rule = Rule(IPv6Network("2001:db8:6200::/42"), IPv4Network("198.51.100.0/24"), 14, PortParams(6, 0, 0))
    p = derive([rule], IPv6Network("2001:db8:6200:4200::/56"), BR)
    assert p.ipv4 == IPv4Address("198.51.100.1")
    assert (p.psid, p.psid_len, p.psid_offset) == (2, 6, 6)
    assert len(p.port_set.ranges()) == 63 and len(p.port_set) == 1008
    assert all(b - a + 1 == 16 for a, b in p.port_set.ranges())
    assert p.map_address == IPv6Address("2001:db8:6200:4200:0:c633:6401:2")
    assert p.port_set.pf() == "6/6/2"
    second = derive([rule], IPv6Network("2001:db8:6200:4300::/56"), BR)
    assert second.ipv4 == p.ipv4 and second.psid == 3
    assert not set(p.port_set) & set(second.port_set)


def test_anti_spoofing_example1() -> None:
    ce = IPv6Address("2001:db8:12:3400:0:c000:212:34")
    ok = IPv4Address("192.0.2.18")
    assert source_is_valid([EX1_RULE], ce, ok, 1232)
    assert not source_is_valid([EX1_RULE], ce, ok, 1236)  # PSID 0x35's port
    assert not source_is_valid([EX1_RULE], ce, IPv4Address("192.0.2.19"), 1232)
    assert not source_is_valid([EX1_RULE], ce, ok, None)
    assert not source_is_valid([EX1_RULE], IPv6Address("2001:db9::1"), ok, 1232)


@pytest.mark.parametrize("sc", scenario.all_scenarios(), ids=lambda s: s.name)
def test_scenario_expectations(sc: scenario.Scenario) -> None:
    """Each scenario's [expect] block is what the model derives for the pool's first prefix."""
    e = sc.expect
    assert e, f"{sc.path} has no [expect] block"
    p = sc.derive()
    got = {
        "prefix": p.delegated_prefix,
        "ipv4": p.ipv4,
        "psid": p.psid,
        "psid_len": p.psid_len,
        "psid_offset": p.psid_offset,
        "ranges": len(p.port_set.ranges()),
        "port_count": len(p.port_set),
        "first_range": list(p.port_set.ranges()[0]),
        "last_range": list(p.port_set.ranges()[-1]),
        "map_address": p.map_address,
        "pf": p.port_set.pf(),
        "rule_ipv6": p.rule.ipv6_prefix,
    }
    for key, want in e.items():
        if key in ("prefix", "rule_ipv6"):
            want = IPv6Network(want)
        elif key in ("ipv4", "map_address"):
            want = ip_address(want)
        assert got[key] == want, f"{sc.name}: {key}"
    # and the BR maps every first-range port back to the CE
    a, b = p.port_set.ranges()[0]
    for port in (a, b):
        if p.shared:
            assert ce_address(p.rule, p.ipv4, port) == p.map_address


@pytest.mark.parametrize("sc", scenario.all_scenarios(), ids=lambda s: s.name)
def test_scenario_toml_round_trip(sc: scenario.Scenario, tmp_path) -> None:
    path = tmp_path / f"{sc.name}.toml"
    path.write_text(scenario.to_toml(sc))
    back = scenario.load(path)
    assert (back.rules, back.brs, back.dhcp, back.wan_mtu, back.ce_count, back.br_first, back.expect) == (
        sc.rules, sc.brs, sc.dhcp, sc.wan_mtu, sc.ce_count, sc.br_first, sc.expect)
