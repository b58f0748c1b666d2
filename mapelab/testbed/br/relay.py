"""The forwarding logic of a strict RFC 7597 §8 Border Relay, free of sockets so tests can drive it.

:class:`Relay` receives packets from two sides and calls two send functions:

* ``from_tunnel(inner, outer_src, outer_dst)``: an IPv4-in-IPv6 packet arrived (decapsulation).
  The outer destination must be a BR address; the outer source selects the rule by longest
  match and must agree with the inner IPv4 source and source port (anti-spoofing, §8.1);
  packets from a BR address are exempt.  An inner destination inside a rule's IPv4 prefix is
  hairpinned: re-encapsulated toward that CE without touching the kernel.  Everything else
  goes out to IPv4 (``send_ipv4``, the TUN device).
* ``from_ipv4(packet)``: an IPv4 packet for the MAP domain arrived from the TUN device
  (encapsulation).  The CE is the MAP address computed from destination address and port —
  the ICMP identifier for queries, the quoted header for ICMP errors, the first fragment's
  decision for the other fragments.  A packet over the tunnel MTU (configured, lowered per CE
  by ICMPv6 Packet Too Big) gets ICMPv4 "fragmentation needed" if DF is set and is fragmented
  in IPv4 before encapsulation otherwise (RFC 2473 §7.2).

All MAP-E arithmetic is :mod:`mapelab.mape`'s; results are cached per (address, port) so the
per-packet cost is a few dict lookups.  Every drop is counted by reason; nothing raises out
of the two entry points for a bad packet (the service loop still guards against bugs).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TextIO

from mapelab.mape import Rule, ce_address_for, spoof_reason
from mapelab.netio.packets import (
    ICMP_ERROR_TYPES,
    PROTO_ICMP,
    Ipv4,
    Malformed,
    fragment,
    icmp_frag_needed,
    icmpv6_ptb_mtu,
    parse,
)

from .fragcache import FragmentCache

#: Drop reasons of the relay itself (spoof reasons come from mapelab.mape).
NOT_BR_ADDRESS = "not-br-address"
NO_CE = "no-ce"
FRAGMENT_ORPHAN = "fragment-orphan"
FRAGMENT_TIMEOUT = "fragment-timeout"
TOO_BIG_ICMP_ERROR = "too-big-icmp-error"
SEND_ERROR = "send-error"
TUN_WRITE_ERROR = "tun-write-error"
NOT_IPV4 = "not-ipv4"
ICMP_RATE_LIMITED = "icmp-rate-limited"  # the too-big packet is dropped; only the ICMP error is skipped

IPV6_MIN_MTU = 1280
#: Source of the ICMPv4 errors the BR originates when the caller names none: it must not be an
#: address of the BR's own namespace, or the kernel would drop it as a martian arriving on the TUN.
DEFAULT_ICMP_SOURCE = IPv4Address("192.0.0.1")
_CACHE_MAX = 1 << 16
_FLOWS_MAX = 200_000
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 33: "dccp", 136: "udplite"}


class Counters:
    """What the tests and people read from ``br-counters.json``; plain attributes for a cheap hot path.

    ``tunnel_*`` count the tunnel side (in: received from CEs, out: sent to CEs), ``ipv4_*`` the TUN
    side (in: from the internet, out: toward it); bytes are IPv4 bytes, without the 40-byte outer
    IPv6 header.  ``drops`` maps reason → count (the RFC 7597 §8.1 reasons of mapelab.mape plus
    the relay's own); ``malformed`` packets are not in ``drops``.
    """

    def __init__(self) -> None:
        self.tunnel_in_packets = 0
        self.tunnel_in_bytes = 0
        self.tunnel_out_packets = 0
        self.tunnel_out_bytes = 0
        self.ipv4_in_packets = 0
        self.ipv4_in_bytes = 0
        self.ipv4_out_packets = 0
        self.ipv4_out_bytes = 0
        self.drops: dict[str, int] = {}
        self.malformed = 0
        self.malformed_reasons: dict[str, int] = {}
        self.hairpin = 0
        self.fragments_in = 0  # fragments received on either side
        self.fragments_held = 0  # arrived before their first fragment
        self.fragments_released = 0  # held ones forwarded once the first fragment came
        self.fragmented_packets = 0  # packets the BR fragmented for the tunnel MTU
        self.fragments_made = 0
        self.icmp_errors_routed = 0  # ICMPv4 errors delivered to a CE by their quoted header
        self.icmp_frag_needed_sent = 0
        self.ptb_received = 0
        self.ptb_applied = 0
        self.flows = 0
        self.internal_errors = 0

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["drops_total"] = sum(self.drops.values())
        return d


class Relay:
    """One BR's state: rules, addresses, MTUs, caches, counters (see the module docstring)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        brs: Sequence[IPv6Address],
        *,
        tunnel_mtu: int,
        send_tunnel: Callable[[bytes, bytes, bytes], None],
        send_ipv4: Callable[[bytes], None],
        antispoof: bool = True,
        icmp_source: IPv4Address = DEFAULT_ICMP_SOURCE,
        flow_log: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        ce_mtu_lifetime: float = 600.0,
        icmp_rate: int = 1000,
    ) -> None:
        if not brs:
            raise ValueError("a BR needs at least one BR address")
        self.rules = tuple(rules)
        self.brs = tuple(brs)
        self.br_set = frozenset(b.packed for b in brs)
        self.primary = self.brs[0].packed
        self.tunnel_mtu = tunnel_mtu
        self.antispoof = antispoof
        self.icmp_source = icmp_source.packed
        self.send_tunnel = send_tunnel
        self.send_ipv4 = send_ipv4
        self.flow_log = flow_log
        self.clock = clock
        self.ce_mtu_lifetime = ce_mtu_lifetime
        self.icmp_rate = icmp_rate  # ICMP errors per second the BR originates at most (RFC 1812 §4.3.2.8)
        self._icmp_window = 0.0
        self._icmp_sent = 0
        self.c = Counters()
        self._spoof_cache: dict[tuple[bytes, bytes, int | None], str | None] = {}
        self._ce_cache: dict[tuple[bytes, int | None], bytes | None] = {}
        self._domain_cache: dict[bytes, bool] = {}
        self._ce_mtu: dict[bytes, tuple[int, float]] = {}  # CE MAP address -> (inner MTU, expiry)
        self._frag_out = FragmentCache()  # encapsulation side: key -> CE address or None
        self._frag_in = FragmentCache()  # decapsulation side: key -> spoof reason or None
        self._flows: set[tuple[Any, ...]] = set()

    # -- MAP-E lookups, cached ---------------------------------------------------------------------

    def _spoof(self, outer_src: bytes, inner_src: bytes, port: int | None) -> str | None:
        key = (outer_src, inner_src, port)
        try:
            return self._spoof_cache[key]
        except KeyError:
            pass
        if len(self._spoof_cache) >= _CACHE_MAX:
            self._spoof_cache.clear()
        r = self._spoof_cache[key] = spoof_reason(self.rules, IPv6Address(outer_src), IPv4Address(inner_src), port)
        return r

    def _ce(self, dst: bytes, port: int | None) -> bytes | None:
        key = (dst, port)
        try:
            return self._ce_cache[key]
        except KeyError:
            pass
        if len(self._ce_cache) >= _CACHE_MAX:
            self._ce_cache.clear()
        a = ce_address_for(self.rules, IPv4Address(dst), port)
        r = self._ce_cache[key] = None if a is None else a.packed
        return r

    def _in_domain(self, dst: bytes) -> bool:
        r = self._domain_cache.get(dst)
        if r is None:
            if len(self._domain_cache) >= _CACHE_MAX:
                self._domain_cache.clear()
            x = int.from_bytes(dst, "big")
            r = self._domain_cache[dst] = any(rule.matches_ipv4(x) for rule in self.rules)
        return r

    def mtu_for(self, ce: bytes) -> int:
        """The largest IPv4 packet that may go into the tunnel toward ``ce``."""
        e = self._ce_mtu.get(ce)
        if e is None:
            return self.tunnel_mtu
        if e[1] <= self.clock():
            del self._ce_mtu[ce]
            return self.tunnel_mtu
        return min(self.tunnel_mtu, e[0])

    # -- flow log ------------------------------------------------------------------------------------

    def _flow(self, direction: str, p: Ipv4, ce: bytes | None, verdict: str) -> None:
        if self.flow_log is None or p.offset:
            return
        key = (direction, p.proto, p.src, p.dst, p.sport, p.dport, ce, p.icmp_type in ICMP_ERROR_TYPES)
        if key in self._flows:
            return
        if len(self._flows) >= _FLOWS_MAX:
            self._flows.clear()
        self._flows.add(key)
        self.c.flows += 1
        rec: dict[str, Any] = {
            "time": round(time.time(), 6),
            "direction": direction,
            "proto": _PROTO_NAMES.get(p.proto, p.proto),
            "src": socket.inet_ntoa(p.src),
            "dst": socket.inet_ntoa(p.dst),
        }
        if p.proto == PROTO_ICMP:
            rec["icmp_type"] = p.icmp_type
            if p.embedded is not None:
                eproto, esrc, edst, esport, edport = p.embedded
                rec["quoted"] = {"proto": _PROTO_NAMES.get(eproto, eproto), "src": socket.inet_ntoa(esrc),
                                 "dst": socket.inet_ntoa(edst), "sport": esport, "dport": edport}
            else:
                rec["id"] = p.sport
        else:
            rec["sport"], rec["dport"] = p.sport, p.dport
        rec["ce"] = None if ce is None else socket.inet_ntop(socket.AF_INET6, ce)
        rec["verdict"] = verdict
        self.flow_log.write(json.dumps(rec) + "\n")

    def _parse(self, data: bytes) -> tuple[bytes, Ipv4] | None:
        """The packet (trimmed to its IPv4 total length) and its header; None, counted, when malformed."""
        try:
            p = parse(data)
        except Malformed as e:
            self.c.malformed += 1
            self.c.malformed_reasons[e.args[0]] = self.c.malformed_reasons.get(e.args[0], 0) + 1
            return None
        return (data[: p.total] if p.total != len(data) else data), p

    # -- decapsulation: CE -> BR ------------------------------------------------------------------

    def from_tunnel(self, data: bytes, outer_src: bytes, outer_dst: bytes) -> None:
        """An IPv4 packet that arrived inside IPv6 from ``outer_src`` to ``outer_dst``."""
        c = self.c
        c.tunnel_in_packets += 1
        c.tunnel_in_bytes += len(data)
        if outer_dst not in self.br_set:
            c.drop(NOT_BR_ADDRESS)
            return
        parsed = self._parse(data)
        if parsed is None:
            return
        data, p = parsed
        reason = None
        if self.antispoof and outer_src not in self.br_set:
            if p.mf or p.offset:
                c.fragments_in += 1
                key = (outer_src, p.src, p.dst, p.proto, p.ident)
                if p.offset:
                    known, reason = self._frag_in.lookup(key)
                    if not known:
                        if self._frag_in.hold(key, (data, p, outer_src, outer_dst), self.clock()):
                            c.fragments_held += 1
                        else:
                            c.drop(FRAGMENT_ORPHAN)
                        return
                else:
                    reason = self._spoof(outer_src, p.src, p.sport)
                    self._deliver_decap(data, p, outer_src, outer_dst, reason)
                    for item in self._frag_in.resolve(key, reason, self.clock()):
                        c.fragments_released += 1
                        self._deliver_decap(*item, reason)
                    return
            else:
                reason = self._spoof(outer_src, p.src, p.sport)
        elif p.mf or p.offset:
            c.fragments_in += 1
        self._deliver_decap(data, p, outer_src, outer_dst, reason)

    def _deliver_decap(self, data: bytes, p: Ipv4, outer_src: bytes, outer_dst: bytes, reason: str | None) -> None:
        c = self.c
        if reason is not None:
            c.drop(reason)
            self._flow("outbound", p, outer_src, reason)
            return
        if self._in_domain(p.dst):
            c.hairpin += 1
            self._encap(data, p, outer_dst, reply_to=outer_src, direction="hairpin")
            return
        try:
            self.send_ipv4(data)
        except OSError:
            c.drop(TUN_WRITE_ERROR)
            return
        c.ipv4_out_packets += 1
        c.ipv4_out_bytes += len(data)
        self._flow("outbound", p, outer_src, "forwarded")

    # -- encapsulation: IPv4 -> CE -------------------------------------------------------------------

    def from_ipv4(self, data: bytes) -> None:
        """An IPv4 packet routed into the MAP domain (read from the TUN device)."""
        c = self.c
        c.ipv4_in_packets += 1
        c.ipv4_in_bytes += len(data)
        if data and data[0] >> 4 != 4:  # IPv6 the kernel routed into the TUN: not ours to judge
            c.drop(NOT_IPV4)
            return
        parsed = self._parse(data)
        if parsed is None:
            return
        data, p = parsed
        self._encap(data, p, self.primary, reply_to=None, direction="inbound")

    def _encap(self, data: bytes, p: Ipv4, br_src: bytes, reply_to: bytes | None, direction: str) -> None:
        c = self.c
        if p.mf or p.offset:
            if direction == "inbound":
                c.fragments_in += 1
            key = (p.src, p.dst, p.proto, p.ident)
            if p.offset:
                known, ce = self._frag_out.lookup(key)
                if not known:
                    if self._frag_out.hold(key, (data, p, br_src, reply_to, direction), self.clock()):
                        c.fragments_held += 1
                    else:
                        c.drop(FRAGMENT_ORPHAN)
                    return
                self._send_to_ce(data, p, ce, br_src, reply_to, direction)
                return
            ce = self._ce(p.dst, p.dport)
            self._send_to_ce(data, p, ce, br_src, reply_to, direction)
            for item in self._frag_out.resolve(key, ce, self.clock()):
                c.fragments_released += 1
                d, q, b, r, dr = item
                self._send_to_ce(d, q, ce, b, r, dr)
            return
        self._send_to_ce(data, p, self._ce(p.dst, p.dport), br_src, reply_to, direction)

    def _send_to_ce(self, data: bytes, p: Ipv4, ce: bytes | None, br_src: bytes, reply_to: bytes | None,
                    direction: str) -> None:
        c = self.c
        if ce is None:
            c.drop(NO_CE)
            self._flow(direction, p, None, NO_CE)
            return
        mtu = self.mtu_for(ce) if self._ce_mtu else self.tunnel_mtu
        if p.total > mtu:
            if p.df:
                if p.embedded is not None:  # never an ICMP error about an ICMP error (RFC 1122)
                    c.drop(TOO_BIG_ICMP_ERROR)
                    return
                self._frag_needed(data, mtu, br_src, reply_to)
                self._flow(direction, p, ce, "frag-needed")
                return
            try:
                pieces = fragment(data, mtu)
            except Malformed as e:
                c.drop(e.args[0])
                return
            c.fragmented_packets += 1
            c.fragments_made += len(pieces)
        else:
            pieces = [data]
        try:
            for piece in pieces:
                self.send_tunnel(piece, br_src, ce)
                c.tunnel_out_packets += 1
                c.tunnel_out_bytes += len(piece)
        except OSError:
            c.drop(SEND_ERROR)
            return
        if p.embedded is not None:
            c.icmp_errors_routed += 1
        self._flow(direction, p, ce, "forwarded")

    def _frag_needed(self, data: bytes, mtu: int, br_src: bytes, reply_to: bytes | None) -> None:
        """Tell the sender the tunnel MTU: into IPv4 for an internet host, back into the tunnel
        for a CE whose packet was being hairpinned."""
        now = self.clock()
        if now - self._icmp_window >= 1.0:
            self._icmp_window, self._icmp_sent = now, 0
        if self._icmp_sent >= self.icmp_rate:
            self.c.drop(ICMP_RATE_LIMITED)
            return
        self._icmp_sent += 1
        icmp = icmp_frag_needed(data, mtu, self.icmp_source)
        self.c.icmp_frag_needed_sent += 1
        try:
            if reply_to is None:
                self.send_ipv4(icmp)
                self.c.ipv4_out_packets += 1
                self.c.ipv4_out_bytes += len(icmp)
            else:
                self.send_tunnel(icmp, br_src, reply_to)
                self.c.tunnel_out_packets += 1
                self.c.tunnel_out_bytes += len(icmp)
        except OSError:
            self.c.drop(SEND_ERROR)

    # -- ICMPv6 Packet Too Big ----------------------------------------------------------------------

    def on_icmpv6(self, data: bytes) -> None:
        """An ICMPv6 message for this node: a Packet Too Big about our tunnel traffic lowers that
        CE's tunnel MTU (never below what IPv6 guarantees, 1280 − 40 for the inner packet)."""
        ptb = icmpv6_ptb_mtu(data)
        if ptb is None:
            return
        self.c.ptb_received += 1
        mtu, qsrc, qdst = ptb
        if qsrc not in self.br_set:
            self.c.drop("ptb-not-ours")
            return
        inner = max(mtu, IPV6_MIN_MTU) - 40
        old = self.mtu_for(qdst)
        if inner < old:
            if len(self._ce_mtu) >= _CACHE_MAX:  # a PTB flood must not grow memory without bound
                del self._ce_mtu[next(iter(self._ce_mtu))]
            self._ce_mtu[qdst] = (inner, self.clock() + self.ce_mtu_lifetime)
            self.c.ptb_applied += 1

    def ce_mtus(self) -> dict[str, int]:
        return {socket.inet_ntop(socket.AF_INET6, k): v[0] for k, v in self._ce_mtu.items()}

    # -- housekeeping ---------------------------------------------------------------------------------

    def expire(self) -> None:
        """Drop timed-out fragment state (counted), called from the service loop a few times a second."""
        now = self.clock()
        for cache in (self._frag_in, self._frag_out):
            n = cache.expire(now)
            if n:
                self.c.drops[FRAGMENT_TIMEOUT] = self.c.drops.get(FRAGMENT_TIMEOUT, 0) + n

    def snapshot(self) -> dict[str, Any]:
        d = self.c.as_dict()
        d["ce_mtu"] = self.ce_mtus()
        d["fragment_cache"] = {"decap_entries": len(self._frag_in), "encap_entries": len(self._frag_out),
                               "held": self._frag_in.held + self._frag_out.held}
        return d
