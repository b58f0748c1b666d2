"""Parsers of what an OpenBSD CE prints, on samples in the exact printed formats (data/outputs/README.md)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

from mapelab import scenario
from mapelab.openbsd import outputs

DATA = Path(__file__).resolve().parent / "data" / "outputs"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def test_ifconfig_all_interfaces() -> None:
    out = outputs.parse_ifconfig(sample("ifconfig-A.txt"))
    assert out.problems == []
    assert list(out.interfaces) == ["lo0", "vio1", "gif0", "enc0"]
    gif = out.interfaces["gif0"]
    assert gif.up and gif.mtu == 1452 and gif.flags == ("UP", "POINTOPOINT", "RUNNING", "MULTICAST")
    assert gif.flags_value == 0x8051 and gif.groups == ("gif", "egress") and gif.index == 11
    assert gif.tunnel == outputs.Tunnel("inet6", IPv6Address("2001:db8:6200:4200:0:c633:6401:2"),
                                        IPv6Address("2001:db8:ffff::1"), ("ttl", "64", "nodf", "ecn"))
    assert gif.inet == [outputs.Inet4(IPv4Address("198.51.100.1"), 32, dest=IPv4Address("0.0.0.1"))]
    assert "encap: txprio payload rxprio payload" in gif.extra
    wan = out.interfaces["vio1"]
    assert wan.lladdr == "52:54:00:12:34:56" and wan.mtu == 1492 and wan.status == "active"
    by_addr = {str(a.address): a for a in wan.inet6}
    assert by_addr["2001:db8:6200:4200:0:c633:6401:2"].prefixlen == 128
    assert by_addr["fe80::5054:ff:fe12:3456"].scope == "vio1"
    assert by_addr["2001:db8:6200:4200:5054:ff:fe12:3456"].flags == ("autoconf",)
    assert out.interfaces["lo0"].inet[0].prefixlen == 8
    assert out.interfaces["enc0"].mtu is None and not out.interfaces["enc0"].up


def test_ifconfig_reports_an_unreadable_address_line() -> None:
    text = "gif0: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1452\n\tinet 198.51.100.1 --> bogus\n"
    out = outputs.parse_ifconfig(text)
    assert out.interfaces["gif0"].inet == []
    assert len(out.problems) == 1 and out.problems[0].line_no == 2 and "inet" in out.problems[0].reason
    assert outputs.parse_ifconfig("garbage here\n").problems[0].reason == "not an interface header"


def test_routes_both_families() -> None:
    t = outputs.parse_routes(sample("netstat-rn.txt"))
    assert t.problems == []
    (default4,) = t.default("inet")
    assert default4.gateway == "0.0.0.1" and default4.interface == "gif0" and default4.flags == "UGS"
    assert default4.network == IPv4Network("0.0.0.0/0") and default4.mtu is None and default4.use == 12
    nets = {r.destination: r.network for r in t.routes if r.family == "inet"}
    assert nets["192.168.1/24"] == IPv4Network("192.168.1.0/24") and nets["127/8"] == IPv4Network("127.0.0.0/8")
    assert nets["0.0.0.1"] == IPv4Network("0.0.0.1/32")
    (default6,) = t.default("inet6")
    assert default6.mtu == 1492 and default6.priority == 8 and default6.interface == "vio1"  # "L" (locked) column
    ll = next(r for r in t.routes if r.destination.startswith("fe80::%vio1"))
    assert ll.network == IPv6Network("fe80::/64")


def test_routes_report_a_short_line() -> None:
    t = outputs.parse_routes("Internet:\ndefault 0.0.0.1 UGS 0\n")
    assert t.routes == [] and "fewer than 8 columns" in t.problems[0].reason


def test_pf_rules_with_counters() -> None:
    r = outputs.parse_pf_rules(sample("pfctl-sr-v.txt"))
    assert r.problems == [] and len(r.rules) == 6
    nat = r.rules[1]
    assert nat.map_e_portset == (6, 6, 2) and nat.evaluations == 60 and nat.packets == 40 and nat.bytes == 3360
    assert nat.inserted_pid == 4711 and nat.state_creations == 0
    assert r.rules[5].states == 3 and r.rules[5].state_creations == 61
    assert r.rules[0].map_e_portset is None
    port = outputs.parse_pf_rules("match out on gif0 inet from (gif0) to any nat-to (gif0) port 13312:13567\n")
    assert port.rules[0].nat_port_range == (13312, 13567) and port.rules[0].evaluations is None
    vv = outputs.parse_pf_rules("@3 pass out all flags S/SA\n  [ Skip steps: i=end ]\n"
                                "  [ Evaluations: x ]\n")
    assert vv.rules[0].number == 3 and vv.extra == ["[ Skip steps: i=end ]"] and len(vv.problems) == 1


def test_pf_states_show_the_nat_ports() -> None:
    s = outputs.parse_pf_states(sample("pfctl-ss.txt"))
    assert s.problems == [] and len(s.states) == 6
    tcp = s.states[0]
    assert tcp.direction == "out" and tcp.nat_source == outputs.Endpoint(IPv4Address("198.51.100.1"), 1062)
    assert tcp.first_orig == outputs.Endpoint(IPv4Address("192.168.1.10"), 41234)
    assert tcp.state == "ESTABLISHED:ESTABLISHED"
    assert s.states[1].direction == "in" and s.states[1].nat_source is None and not s.states[1].translated
    nat_ports = {st.proto: st.nat_source.port for st in s.states if st.nat_source}
    ps = scenario.load("cosmote-like").derive().port_set
    assert nat_ports == {"tcp": 1062, "udp": 62500, "icmp": 1060} and all(p in ps for p in nat_ports.values())
    assert s.states[4].proto == "ipencap" and s.states[4].first.port is None
    assert s.states[5].first == outputs.Endpoint(IPv6Address("2001:db8:6200:4200::10"), 51000)


def test_pf_states_report_an_unreadable_translation() -> None:
    s = outputs.parse_pf_states(
        "all tcp 198.51.100.1:1062 (192.168.1.10:41234 -> 203.0.113.1:80    ESTABLISHED:ESTABLISHED\n"
        "all udp 198.51.100.1:99999999999999999999 (10.0.0.1:1) -> 203.0.113.1:9    SINGLE:NO_TRAFFIC\n")
    assert s.states == [] and [p.line_no for p in s.problems] == [1, 2]


def test_pf_status() -> None:
    st = outputs.parse_pf_status(sample("pfctl-si.txt"))
    assert st.problems == [] and st.enabled and st.debug == "err" and st.running_seconds == 754
    assert st.counter("State Table", "current entries") == 6 and st.counter("State Table", "searches") == 12345
    assert st.rates["State Table"]["searches"] == 16.4
    assert st.counter("Counters", "translate") == 3 and st.counter("Counters", "state-mismatch") == 2
    off = outputs.parse_pf_status("Status: Disabled                                   Debug: err\n")
    assert not off.enabled and off.running_seconds is None
    assert outputs.parse_pf_status("pfctl: /dev/pf: Permission denied\n").problems


def test_dhcp6leasectl_stock_and_patched() -> None:
    stock = outputs.parse_dhcp6leasectl(sample("dhcp6leasectl-stock.txt"))
    assert stock.problems == [] and stock.interface == "vio1" and stock.state == "Bound"
    assert stock.prefixes == {0: IPv6Network("2001:db8:6200:4200::/56")}
    assert stock.mape is None and stock.lease == "1 minute"
    mape = outputs.parse_dhcp6leasectl(sample("dhcp6leasectl-mape.txt"))
    assert mape.problems == [] and mape.lease_seconds == 604800 and mape.lease == "7 days"
    assert mape.mape is not None and mape.mape.br == IPv6Address("2001:db8:ffff::1")
    (rule,) = mape.mape.rules
    assert rule.portparams == (6, 0, 0) and rule.ea_len == 14 and rule.ipv6_prefix == IPv6Network("2001:db8:6200::/42")
    assert mape.derive() == scenario.load("cosmote-like").derive()


def test_lease_file_matches_dhcp6leasectl() -> None:
    lease = outputs.parse_lease_file(sample("lease-vio1.txt"))
    assert lease.problems == [] and lease.derive() == scenario.load("cosmote-like").derive()
    bad = outputs.parse_lease_file("mape_portparams 6 0 0\nia_pd 0 2001:db8:: 56\nmystery 1\n")
    assert [p.line_no for p in bad.problems] == [1, 3] and bad.prefixes


def test_dhcp6leasectl_waiting_dots_and_bad_lines() -> None:
    lease = outputs.parse_dhcp6leasectl("...\nvio1 [Soliciting]\n\tMAP-E\n\t\trule: flags x\n")
    assert lease.state == "Soliciting" and len(lease.problems) == 1 and lease.mape == outputs.MapeLease(None, ())
