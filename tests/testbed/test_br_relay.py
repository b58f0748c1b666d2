"""The BR's forwarding rules without namespaces: :class:`Relay` driven with fake send functions and a
fake clock, for the cases a live topology makes slow or nondeterministic (timeouts, several
rules, several BR addresses, exemptions).  No root needed."""

from __future__ import annotations

import io
import json
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet import fragment as scapy_fragment

from mapelab.scenario import load
from mapelab.testbed.br.relay import Relay

INET = "198.18.0.2"


class Harness:
    def __init__(self, scenario: str = "cosmote-like", **kw: Any) -> None:
        self.scenario = load(scenario)
        self.tunnel: list[tuple[bytes, IPv6Address, IPv6Address]] = []
        self.ipv4: list[bytes] = []
        self.now = 1000.0
        self.log = io.StringIO()
        self.relay = Relay(
            self.scenario.rules, kw.pop("brs", self.scenario.brs), tunnel_mtu=kw.pop("mtu", self.scenario.tunnel_mtu),
            send_tunnel=lambda p, s, d: self.tunnel.append((p, IPv6Address(s), IPv6Address(d))),
            send_ipv4=self.ipv4.append, flow_log=self.log, clock=lambda: self.now, **kw,
        )
        self.maps = [self.scenario.derive(p).map_address for p in self.scenario.delegated_prefixes()]

    def up(self, pkt: bytes | IP, src: IPv6Address, dst: IPv6Address | None = None) -> None:
        self.relay.from_tunnel(bytes(pkt), src.packed, (dst or self.scenario.br).packed)

    def down(self, pkt: bytes | IP) -> None:
        self.relay.from_ipv4(bytes(pkt))

    @property
    def drops(self) -> dict[str, int]:
        return self.relay.c.drops


def udp(src: str, sport: int, dst: str, dport: int, size: int = 0, **ip: Any) -> IP:
    return IP(src=src, dst=dst, **ip) / UDP(sport=sport, dport=dport) / (b"x" * size)


def test_outbound_fragments_wait_for_the_first_and_share_its_verdict() -> None:
    h = Harness()
    good = scapy_fragment(udp("198.51.100.1", 1056, INET, 9, 2000, id=1), fragsize=800)
    bad = scapy_fragment(udp("198.51.100.1", 1072, INET, 9, 2000, id=2), fragsize=800)
    for f in [*good[1:], *bad[1:]]:
        h.up(f, h.maps[0])
    assert h.ipv4 == [] and h.relay.c.fragments_held == 4
    h.up(good[0], h.maps[0])
    h.up(bad[0], h.maps[0])
    assert len(h.ipv4) == 3 and h.drops == {"port-outside-set": 3}
    # later fragments of the same datagrams find the decision
    h.up(good[1], h.maps[0])
    assert len(h.ipv4) == 4


def test_orphan_fragments_time_out_and_are_counted() -> None:
    h = Harness()
    frags = scapy_fragment(udp(INET, 53, "198.51.100.1", 1072, 2000, id=9), fragsize=800)
    h.down(frags[2])
    h.now += 60
    h.relay.expire()
    assert h.drops == {"fragment-timeout": 1}
    h.down(frags[0])
    assert len(h.tunnel) == 1 and h.tunnel[0][2] == h.maps[1]


def test_fragment_memory_is_bounded() -> None:
    h = Harness()
    for i in range(20_000):
        h.down(IP(src=INET, dst="198.51.100.1", id=i, frag=100, proto=17) / (b"y" * 8))
    assert h.relay.snapshot()["fragment_cache"]["held"] <= 4096
    assert h.drops.get("fragment-orphan", 0) > 0


def test_packets_from_a_br_address_are_exempt() -> None:
    h = Harness()
    h.up(udp("198.51.100.1", 80, INET, 9), h.scenario.br)  # a system port: nobody's, but from the BR
    assert len(h.ipv4) == 1 and not h.drops


def test_protocol_without_ports_on_a_shared_address_is_dropped() -> None:
    h = Harness()
    h.up(IP(src="198.51.100.1", dst=INET, proto=47) / (b"\0" * 8), h.maps[0])
    assert h.drops == {"no-port": 1}
    k0 = Harness("k0-full-address")  # the CE owns a whole address: GRE is fine
    k0.up(IP(src="203.0.113.4", dst=INET, proto=47) / (b"\0" * 8), k0.maps[0])
    assert len(k0.ipv4) == 1 and not k0.drops


def test_rule_selection_by_longest_match_of_the_source() -> None:
    h = Harness("multi-rule")
    me = h.maps[0]
    assert me == IPv6Address("2001:db8:1234:5600:0:c633:6434:56")
    h.up(udp("198.51.100.52", 1368, INET, 9), me)  # the /40 rule's address and PSID 0x56
    assert len(h.ipv4) == 1
    h.up(udp("192.0.2.18", 1232, INET, 9), me)  # what the /32 rule would have given
    assert h.drops == {"address-mismatch": 1}
    h.up(udp("192.0.2.18", 1232, INET, 9), IPv6Address("2001:db9::1"))  # no rule at all
    assert h.drops["no-rule"] == 1


def test_hairpin_leaves_from_the_br_address_it_arrived_at() -> None:
    second = IPv6Address("2001:db8:ffff::2")
    h = Harness(brs=(IPv6Address("2001:db8:ffff::1"), second))
    h.up(udp("198.51.100.1", 1056, "198.51.100.1", 1072), h.maps[0], second)
    assert [(s, d) for _, s, d in h.tunnel] == [(second, h.maps[1])] and h.relay.c.hairpin == 1
    h.up(udp("198.51.100.1", 1056, INET, 9), h.maps[0], IPv6Address("2001:db8:ffff::3"))
    assert h.drops == {"not-br-address": 1}


def test_hairpin_too_big_with_df_answers_the_sending_ce_through_the_tunnel() -> None:
    h = Harness(mtu=1000)
    h.up(udp("198.51.100.1", 1056, "198.51.100.1", 1072, 1200, flags="DF"), h.maps[0])
    assert len(h.tunnel) == 1
    icmp, src, dst = h.tunnel[0]
    assert (src, dst) == (h.scenario.br, h.maps[0])
    p = IP(icmp)
    assert p[ICMP].type == 3 and p[ICMP].code == 4 and p[ICMP].nexthopmtu == 1000 and p.dst == "198.51.100.1"
    assert p.src == "192.0.0.1"


def test_icmp_error_too_big_is_not_answered_with_another_error() -> None:
    h = Harness(mtu=600)
    quote = bytes(udp("198.51.100.1", 1056, INET, 9, 900))
    err = IP(src=INET, dst="198.51.100.1", flags="DF") / ICMP(type=3, code=3) / quote
    h.down(err)
    assert h.ipv4 == [] and h.tunnel == [] and h.drops == {"too-big-icmp-error": 1}


def test_ptb_clamps_and_expires() -> None:
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

    h = Harness()
    ce = h.maps[1]

    def ptb(mtu: int, src: str = str(h.scenario.br)) -> None:
        h.relay.on_icmpv6(bytes(ICMPv6PacketTooBig(mtu=mtu) / IPv6(src=src, dst=str(ce), nh=4)))

    ptb(1400)
    assert h.relay.mtu_for(ce.packed) == 1360
    ptb(1450)  # never raises it
    assert h.relay.mtu_for(ce.packed) == 1360
    ptb(1400, src="2001:db8::99")  # about someone else's packet
    assert h.drops == {"ptb-not-ours": 1}
    h.now += 601
    assert h.relay.mtu_for(ce.packed) == h.scenario.tunnel_mtu


def test_flow_log_is_one_line_per_new_flow() -> None:
    h = Harness()
    for _ in range(5):
        h.up(udp("198.51.100.1", 1056, INET, 9), h.maps[0])
    h.down(IP(src=INET, dst="198.51.100.1") / ICMP(type=0, id=1075))
    lines = [json.loads(x) for x in h.log.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0] | {"time": 0} == {"time": 0, "direction": "outbound", "proto": "udp", "src": "198.51.100.1",
                                      "dst": INET, "sport": 1056, "dport": 9, "ce": str(h.maps[0]),
                                      "verdict": "forwarded"}
    assert lines[1]["id"] == 1075 and lines[1]["ce"] == str(h.maps[1]) and lines[1]["direction"] == "inbound"


def test_non_ipv4_from_the_tun_is_counted_not_malformed() -> None:
    h = Harness()
    h.down(b"\x60" + b"\0" * 39)
    h.down(b"\x45\x00")
    assert h.drops == {"not-ipv4": 1} and h.relay.c.malformed == 1


def test_icmp_source_is_configurable() -> None:
    h = Harness(icmp_source=IPv4Address("203.0.113.1"), mtu=600)
    h.down(udp(INET, 53, "198.51.100.1", 1056, 700, flags="DF"))
    assert IP(h.ipv4[0]).src == "203.0.113.1"


def test_frag_needed_is_rate_limited() -> None:
    h = Harness(mtu=600, icmp_rate=10)
    for _ in range(25):
        h.down(udp(INET, 53, "198.51.100.1", 1056, 700, flags="DF"))
    assert len(h.ipv4) == 10 and h.drops == {"icmp-rate-limited": 15}
    h.now += 1.0
    h.down(udp(INET, 53, "198.51.100.1", 1056, 700, flags="DF"))
    assert len(h.ipv4) == 11
