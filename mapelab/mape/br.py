"""The IPv4 → IPv6 direction of MAP-E: what a BR (and a CE holding Forwarding Mapping Rules) computes.

* ``ce_address``: (IPv4 address, port or ICMP id) under a rule → the MAP IPv6 address of the CE
  that owns that port (RFC 7597 §5.3, §8 "BR" and Appendix A Example 2).
* ``spoof_reason``: the anti-spoofing check both the BR and the CE MUST make on a decapsulated
  packet (RFC 7597 §8.1): the outer IPv6 source names the IPv4 address and PSID its sender may use.
* ``tunnel_destination``: the CE's choice between the BR and a peer CE (F flag, §5.4).

The BR reconstructs the End-user prefix as Rule IPv6 prefix + EA bits (n + o bits).  A CE whose
delegated prefix is longer than n + o uses its own extra bits in its MAP address; the two agree
when those bits are zero, which is what an ISP configures (delegated length = n + o).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from .derive import MapeParams, _from_ea_bits, _map_address, _mask
from .portset import PortSet
from .rule import Rule, longest_match_ipv4, longest_match_ipv6

#: Reasons ``spoof_reason`` gives; the BR counts drops under these names.
NO_RULE = "no-rule"
ADDRESS_MISMATCH = "address-mismatch"
PORT_OUTSIDE_SET = "port-outside-set"
NO_PORT = "no-port"


def ce_address(rule: Rule, ipv4: IPv4Address, port: int | None) -> IPv6Address | None:
    """The MAP address of the CE owning ``ipv4``/``port`` under ``rule``; None when nobody owns it
    (outside the rule's IPv4 prefix, or a port no PSID owns, such as 0–1023 with offset 6)."""
    addr = int(ipv4)
    if not rule.matches_ipv4(addr):
        return None
    r, o, n = rule.r, rule.ea_len, rule.n
    p = 32 - r
    suffix = addr & _mask(p)
    a = rule.psid_offset
    explicit = rule.explicit_psid
    if o <= p:
        ea = suffix >> (p - o)
        field = addr & ~_mask(p - o) & _mask(32)
        if o == p and explicit is not None:
            k, psid = explicit
        else:
            k, psid = 0, 0
    else:
        q = o - p
        if port is None:
            return None
        psid_q = (port >> (16 - a - q)) & _mask(q)
        ea = (suffix << q) | psid_q
        field = addr
        k, psid = explicit if explicit is not None else (q, psid_q)
    if k and (port is None or port not in PortSet(a, k, psid)):
        return None
    prefix = rule.v6 | (ea << (128 - n - o)) if o else rule.v6
    return IPv6Address(_map_address(prefix, n + o, field, psid if k else 0))


def ce_address_for(rules: Sequence[Rule], ipv4: IPv4Address, port: int | None) -> IPv6Address | None:
    """``ce_address`` under the rule with the longest IPv4 match (how a BR picks the rule)."""
    rule = longest_match_ipv4(rules, int(ipv4))
    return None if rule is None else ce_address(rule, ipv4, port)


def spoof_reason(
    rules: Sequence[Rule], outer_src: IPv6Address, inner_src: IPv4Address, src_port: int | None
) -> str | None:
    """Why a decapsulated packet must be dropped, or None when its sources are consistent.

    ``src_port`` is the transport source port, the ICMP echo identifier, or None for a
    protocol without ports (acceptable only when the sender's IPv4 is not shared).
    """
    src = int(outer_src)
    rule = longest_match_ipv6(rules, src)
    if rule is None:
        return NO_RULE
    n, o = rule.n, rule.ea_len
    ea = (src >> (128 - n - o)) & _mask(o)
    ipv4, ipv4_len, k, psid, _ = _from_ea_bits(rule, ea)
    shift = 32 - ipv4_len
    if (int(inner_src) >> shift) != (ipv4 >> shift):
        return ADDRESS_MISMATCH
    if k:
        if src_port is None:
            return NO_PORT
        if src_port not in PortSet(rule.psid_offset, k, psid):
            return PORT_OUTSIDE_SET
    return None


def source_is_valid(
    rules: Sequence[Rule], outer_src: IPv6Address, inner_src: IPv4Address, src_port: int | None
) -> bool:
    """The anti-spoofing predicate of RFC 7597 §8.1 as a boolean."""
    return spoof_reason(rules, outer_src, inner_src, src_port) is None


def tunnel_destination(
    params: MapeParams, rules: Sequence[Rule], ipv4_dst: IPv4Address, port: int | None
) -> IPv6Address | None:
    """Where the CE sends a packet for ``ipv4_dst``: a peer CE under a Forwarding Mapping Rule
    (F flag set, longest IPv4 match), otherwise the BR (RFC 7597 §5.4)."""
    fmrs = [r for r in rules if r.forwarding]
    rule = longest_match_ipv4(fmrs, int(ipv4_dst)) if fmrs else None
    if rule is not None:
        peer = ce_address(rule, ipv4_dst, port)
        if peer is not None:
            return peer
    return params.br
