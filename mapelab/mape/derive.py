"""From a delegated prefix and a set of rules to everything a MAP-E CE configures (RFC 7597 §5, §6).

``derive()`` is the CE's computation: select the Basic Mapping Rule by longest match, read the
EA bits, and produce the IPv4 address or prefix, the PSID and its length, the port set, the MAP
IPv6 address and the tunnel endpoints.  The BR's computations (``mapelab.mape.br``) use the
same ``_from_ea_bits`` so the two sides can never disagree by construction — only by data.

Decision (RFC 7598 §4.5): an explicit PSID in OPTION_S46_PORTPARAMS (PSID length > 0) is
used in place of the EA-derived one when the CE ends up with a full IPv4 address; it is
discarded when the CE ends up with an IPv4 prefix ("MUST be discarded if the S46 CE isn't
configured with a full IPv4 address").  When the explicit PSID disagrees with PSID bits in the
EA bits, the explicit one wins and the result says so in ``notes``: that is a provisioning error
worth showing, but the RFC's MUST tells the CE what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .errors import MapeParameterError
from .portset import PortSet
from .rule import Rule, longest_match_ipv6

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class MapeParams:
    """What a CE derives from its delegated prefix: the single source of truth for tests and configs."""

    rule: Rule
    delegated_prefix: IPv6Network
    ipv4: IPv4Address
    ipv4_len: int  # 32 for a full or shared address, r + o for a prefix
    psid_offset: int
    psid_len: int
    psid: int
    port_set: PortSet
    map_address: IPv6Address
    br: IPv6Address | None = None
    notes: tuple[str, ...] = ()

    @property
    def ipv4_network(self) -> IPv4Network:
        return IPv4Network((int(self.ipv4), self.ipv4_len))

    @property
    def shared(self) -> bool:
        """True when the IPv4 address is shared: NAT44 MUST stay inside the port set."""
        return self.psid_len > 0

    @property
    def sharing_ratio(self) -> int:
        return 1 << self.psid_len

    @property
    def ipv4_text(self) -> str:
        """The address, or ``a.b.c.d/len`` when the CE got a prefix."""
        return str(self.ipv4) if self.ipv4_len == 32 else str(self.ipv4_network)

    def tunnel_endpoints(self) -> tuple[IPv6Address, IPv6Address | None]:
        """(local, remote) of the CE's softwire toward the BR."""
        return self.map_address, self.br


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _from_ea_bits(rule: Rule, ea: int) -> tuple[int, int, int, int, tuple[str, ...]]:
    """EA bits → (IPv4 as int, IPv4 length, k, PSID, notes): RFC 7597 §5.2 plus the §4.5 decision."""
    r, o = rule.r, rule.ea_len
    p = 32 - r
    notes: tuple[str, ...] = ()
    if o <= p:  # an IPv4 prefix (o < p) or a full address (o == p)
        ipv4 = rule.v4 | (ea << (p - o))
        ipv4_len = r + o
        k, psid = 0, 0
    else:  # a shared address: the last q EA bits are the PSID
        q = o - p
        ipv4 = rule.v4 | (ea >> q)
        ipv4_len = 32
        k, psid = q, ea & _mask(q)
    explicit = rule.explicit_psid
    if explicit is not None:
        if ipv4_len < 32:
            notes = (
                f"explicit PSID {explicit[1]}/{explicit[0]} discarded: the CE has an IPv4 prefix, "
                "not a full address (RFC 7598 §4.5)",
            )
        else:
            if k and (k, psid) != explicit:
                notes = (
                    f"explicit PSID {explicit[1]}/{explicit[0]} overrides PSID {psid}/{k} from the EA bits "
                    "(RFC 7598 §4.5: the explicit PSID MUST be used)",
                )
            k, psid = explicit
    return ipv4, ipv4_len, k, psid, notes


def _map_address(prefix: int, prefix_len: int, ipv4: int, psid: int) -> int:
    """RFC 7597 §6: prefix | subnet ID 0 | 16 zero bits, IPv4 (right-padded), PSID (right-aligned).

    A delegated prefix longer than /64 overwrites the most significant bits of the interface id.
    """
    iid = (ipv4 << 16) | psid
    if prefix_len <= 64:
        return (prefix & ~_MASK64 & _mask(128)) | iid
    return prefix | (iid & _mask(128 - prefix_len))


def select_rule(rules: Iterable[Rule], prefix: IPv6Network) -> Rule:
    """The BMR for a delegated prefix: the longest rule IPv6 prefix that contains it."""
    rules = tuple(rules)
    if not rules:
        raise MapeParameterError("rules", "none", "at least one rule (a MAP-E container carries one or more)")
    rule = longest_match_ipv6(rules, int(prefix.network_address), prefix.prefixlen)
    if rule is None:
        allowed = " or ".join(str(x.ipv6_prefix) for x in rules)
        raise MapeParameterError("delegated prefix", prefix, f"a prefix inside {allowed}", "no rule matches")
    return rule


def _tie_note(rules: tuple[Rule, ...], chosen: Rule) -> tuple[str, ...]:
    """Decision: two different rules with the same IPv6 prefix are a tie RFC 7597 leaves open (the
    longest match does not separate them).  Scenarios refuse them; off the wire the model takes the
    first one in the container, as a CE reading it in order would, and says so."""
    others = [r for r in rules if r.ipv6_prefix == chosen.ipv6_prefix and r != chosen]
    if not others:
        return ()
    ignored = "; ".join(f"{r.ipv4_prefix} EA {r.ea_len}" for r in others)
    return (f"{len(others) + 1} rules share the IPv6 prefix {chosen.ipv6_prefix} (RFC 7597 leaves the tie open): "
            f"the first in the container is used ({chosen.ipv4_prefix} EA {chosen.ea_len}), not {ignored}",)


def derive(
    rules: Rule | Sequence[Rule], prefix: IPv6Network, br: IPv6Address | Sequence[IPv6Address] | None = None
) -> MapeParams:
    """Everything the CE configures, from its delegated prefix and the rules (and BR) it received."""
    rules = (rules,) if isinstance(rules, Rule) else tuple(rules)
    rule = select_rule(rules, prefix)
    n, o = rule.n, rule.ea_len
    plen = prefix.prefixlen
    if plen < n + o:
        raise MapeParameterError(
            "delegated prefix length", f"/{plen}", f"/{n + o} or longer",
            f"rule {rule.ipv6_prefix} with EA length {o} needs {n + o} bits",
        )
    pint = int(prefix.network_address)
    ea = (pint >> (128 - n - o)) & _mask(o)
    ipv4, ipv4_len, k, psid, notes = _from_ea_bits(rule, ea)
    notes = _tie_note(rules, rule) + notes
    offset = rule.psid_offset
    if offset + k > 16:
        raise MapeParameterError("psid-offset + psid-len", offset + k, "0..16")
    if br is not None and not isinstance(br, IPv6Address):
        br = br[0] if br else None
    return MapeParams(
        rule=rule,
        delegated_prefix=prefix,
        ipv4=IPv4Address(ipv4),
        ipv4_len=ipv4_len,
        psid_offset=offset,
        psid_len=k,
        psid=psid,
        port_set=PortSet(offset, k, psid),
        map_address=IPv6Address(_map_address(pint, plen, ipv4, psid if k else 0)),
        br=br,
        notes=notes,
    )

