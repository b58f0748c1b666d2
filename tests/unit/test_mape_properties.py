"""Properties that must hold for every parameter set, not just the published vectors."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from mapelab.mape import PortParams, PortSet, Rule, ce_address, derive, source_is_valid, spoof_reason


@st.composite
def sharing(draw) -> tuple[int, int]:
    a = draw(st.integers(0, 15))
    k = draw(st.integers(1, 16 - a))
    return a, k


@settings(max_examples=150, deadline=None)
@given(sharing())
def test_psid_sets_are_disjoint_and_cover_every_port_with_a_nonzero(ak: tuple[int, int]) -> None:
    a, k = ak
    owner = [0] * 65536  # 0 = nobody, else PSID + 1
    for psid in range(1 << k):
        for port in PortSet(a, k, psid):
            assert owner[port] == 0, f"port {port} owned by PSID {owner[port] - 1} and {psid}"
            owner[port] = psid + 1
    first_usable = (1 << (16 - a)) if a else 1
    for port in range(65536):
        assert bool(owner[port]) == (port >= first_usable), port


@settings(max_examples=300, deadline=None)
@given(sharing(), st.integers(0, 65535), st.integers(0, 65535))
def test_membership_agrees_with_ranges(ak: tuple[int, int], psid_seed: int, port: int) -> None:
    a, k = ak
    ps = PortSet(a, k, psid_seed % (1 << k))
    in_ranges = any(lo <= port <= hi for lo, hi in ps.ranges())
    assert (port in ps) == in_ranges
    assert len(ps) == sum(hi - lo + 1 for lo, hi in ps.ranges())


@st.composite
def shared_domain(draw) -> tuple[Rule, IPv6Network]:
    """A random shared-address rule and a delegated prefix of length n + o inside it."""
    r = draw(st.integers(16, 31))
    q = draw(st.integers(1, 10))
    a = draw(st.integers(0, 16 - q))
    o = (32 - r) + q
    n = draw(st.integers(8, 64 - o))
    v6 = draw(st.integers(0, (1 << n) - 1)) << (128 - n)
    v4 = draw(st.integers(0, (1 << r) - 1)) << (32 - r)
    ea = draw(st.integers(0, (1 << o) - 1))
    rule = Rule(IPv6Network((v6, n)), IPv4Network((v4, r)), o, PortParams(offset=a))
    return rule, IPv6Network((v6 | (ea << (128 - n - o)), n + o))


@settings(max_examples=300, deadline=None)
@given(shared_domain(), st.data())
def test_br_mapping_inverts_derivation(domain: tuple[Rule, IPv6Network], data) -> None:
    rule, prefix = domain
    p = derive(rule, prefix)
    ranges = p.port_set.ranges()
    lo, hi = ranges[data.draw(st.integers(0, len(ranges) - 1))]
    port = data.draw(st.integers(lo, hi))
    assert ce_address(rule, p.ipv4, port) == p.map_address
    assert source_is_valid([rule], p.map_address, p.ipv4, port)
    # a port of another PSID maps elsewhere and fails the anti-spoofing check from this CE
    other = (port + (1 << p.port_set.m)) & 0xFFFF
    if other and other not in p.port_set:
        assert ce_address(rule, p.ipv4, other) != p.map_address
        assert spoof_reason([rule], p.map_address, p.ipv4, other) is not None


@settings(max_examples=200, deadline=None)
@given(shared_domain(), st.integers(0, 0xFFFFFFFF))
def test_wrong_inner_address_is_spoofed(domain: tuple[Rule, IPv6Network], addr: int) -> None:
    rule, prefix = domain
    p = derive(rule, prefix)
    port = p.port_set.ranges()[0][0]
    verdict = source_is_valid([rule], p.map_address, IPv4Address(addr), port)
    assert verdict == (IPv4Address(addr) == p.ipv4)
    assert isinstance(p.map_address, IPv6Address)
