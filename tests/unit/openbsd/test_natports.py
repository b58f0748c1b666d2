"""Which ports pf on OpenBSD hands out: the port set minus in_baddynamic(), except single ports."""

from __future__ import annotations

import dataclasses

from mapelab import scenario
from mapelab.mape import PortSet
from mapelab.openbsd import natports


def _with(offset: int, k: int, psid: int):
    base = scenario.load("rfc7597-example1").derive()
    return dataclasses.replace(base, psid_offset=offset, psid_len=k, psid=psid, port_set=PortSet(offset, k, psid))


def test_reserved_lists_are_the_in_pcb_h_defaults() -> None:
    tcp, udp = natports.reserved_ports("tcp"), natports.reserved_ports("udp")
    assert set(range(6000, 6011)) <= tcp and {587, 853, 2049} <= tcp and 4500 not in tcp
    assert {623, 664, 2049, 3784, 3785, 7784, 4500} <= udp
    assert 4500 not in natports.reserved_ports("udp", ipsec=False)
    assert natports.reserved_ports("icmp") == frozenset()


def test_range_containing_reserved_ports_loses_them() -> None:
    p = _with(0, 4, 1)  # a = 0: one range 4096-8191, pf gets "port 4096:8191"
    assert natports.pf_ranges(p) == [(4096, 8191)]
    tcp = natports.allocatable_ports(p, "tcp")
    assert not tcp & set(range(6000, 6011)) and len(tcp) == 4096 - 11
    udp = natports.allocatable_ports(p, "udp")
    assert 4500 not in udp and 7784 not in udp and 6000 in udp and len(udp) == 4096 - 2
    assert natports.withheld_ports(p, "tcp") == frozenset(range(6000, 6011))


def test_single_port_blocks_keep_reserved_ports() -> None:
    # a = 6, k = 10: every block is one port (low == high): pf takes it without in_baddynamic()
    p = _with(6, 10, 880)  # block A = 5: 5 * 1024 + 880 = 6000
    assert (6000, 6000) in natports.pf_ranges(p)
    assert 6000 in natports.allocatable_ports(p, "tcp")
    assert natports.withheld_ports(p, "tcp") == frozenset()


def test_mape_blocks_for_cosmote_and_icmp_ids() -> None:
    p = scenario.load("cosmote-like").derive()
    assert natports.pf_ranges(p) == p.port_set.ranges()
    assert natports.allocatable_ports(p, "icmp") == frozenset(p.port_set)
    off0 = scenario.load("offset0").derive()
    assert len(natports.allocatable_ports(off0, "icmp")) == 65535  # escapes the set (see ceconf limitation)


def test_plain_nat_uses_pf_default_proxy_range() -> None:
    p = scenario.load("k0-full-address").derive()
    assert natports.pf_ranges(p) == [(50001, 65535)]
    assert min(natports.allocatable_ports(p, "udp")) == 50001
    assert 1024 in natports.withheld_ports(p, "tcp")
